"""The tool's version: in every manifest and fingerprint, and `hnm --version`. A leaf, so modules low in the
import graph (artifacts.manifest) need not import the package root."""

__version__ = "0.1.0"
