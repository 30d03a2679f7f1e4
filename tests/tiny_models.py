"""A real but tiny sentence-transformers model, built offline inside the tests (no hub, no weights on disk).

`build_tiny_bert(path)` writes a random-weight 1-layer BERT with a WordLevel tokenizer and a mean-pooling
head as a SentenceTransformer folder. The same folder also loads as a `CrossEncoder` base (it has
config.json, the weights and the tokenizer at its root), so train-reranker tests can reuse it.
Weights are seeded: the folder's vectors are the same on every run on one machine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Enough words to give the test corpora (tests/conftest.py, examples/) mostly known tokens.
DEFAULT_WORDS = """
a an the of to in on at for with by from and or not is are be it this that what how do i my your you we
create deploy install manage managed database mysql server service console hosts backups backup yourself own
network virtual cloud vcn vnic interface card instance subnet subnets region private attaches overview
web application firewall filters http requests rules policies policy inspects traffic between layers
block volume volumes schedule object storage lifecycle move objects archive after number days night every
query passage document text title search find mine hard negative positive model vector embedding
""".split()


def _vocab(words: Iterable[str]) -> dict[str, int]:
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for word in list(DEFAULT_WORDS) + [w for text in words for w in re.findall(r"\w+", text.lower())]:
        vocab.setdefault(word, len(vocab))
    return vocab


def build_tiny_bert(path: Path, words: Iterable[str] = (), hidden: int = 32, seed: int = 0) -> Path:
    """Write a tiny SentenceTransformer (1-layer BERT, WordLevel tokenizer, mean pooling) to `path`.

    Args:
        path: folder to create (its parent must exist).
        words: extra texts whose lowercase words join the vocabulary.
        hidden: hidden size (and output dimension).
        seed: torch seed for the random weights.

    Returns:
        `path`, now a folder that `SentenceTransformer(str(path))` and `CrossEncoder(str(path))` load offline.
    """
    import tempfile

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    path = Path(path)
    vocab = _vocab(words)
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    bert = BertModel(config)
    with tempfile.TemporaryDirectory() as tmp:
        bert.save_pretrained(tmp)
        fast.save_pretrained(tmp)
        transformer = Transformer(tmp, max_seq_length=128)
        model = SentenceTransformer(modules=[transformer, Pooling(hidden, pooling_mode="mean")], device="cpu")
        model.save(str(path))
    return path


def build_tiny_cross_encoder(path: Path, words: Iterable[str] = (), seed: int = 1) -> Path:
    """Write a tiny pretrained-style cross-encoder (BertForSequenceClassification, 1 label, a non-zero head,
    a custom label name) that `CrossEncoder(str(path))` loads offline: what a user's downloaded reranker looks like."""
    import tempfile

    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    with tempfile.TemporaryDirectory() as tmp:
        base = build_tiny_bert(Path(tmp) / "bert", words=words)
        tokenizer = AutoTokenizer.from_pretrained(str(base))
        config = BertConfig.from_pretrained(str(base), num_labels=1, id2label={0: "relevance"})
        torch.manual_seed(seed)
        model = BertForSequenceClassification(config)
        with torch.no_grad():
            model.classifier.weight.normal_(0.0, 0.5)
            model.classifier.bias.fill_(0.25)
        model.save_pretrained(tmp + "/ce")
        tokenizer.save_pretrained(tmp + "/ce")
        CrossEncoder(tmp + "/ce", device="cpu").save(str(path))
    return Path(path)
