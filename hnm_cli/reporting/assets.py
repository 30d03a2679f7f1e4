"""The report page's inline stylesheet and script, as the text `render.py` puts in its <style> and <script>
elements (verbatim: the page's bytes depend on them). Kept apart from the HTML builders because they are page
assets, not code that reads the page data; the script reads that data from the inline JSON block.
"""

CSS = """
:root{--fg:#1f2937;--mut:#6b7280;--bd:#e5e7eb;--bg:#f9fafb;--ok:#16a34a;--bad:#dc2626;--warn:#d97706;--acc:#2563eb}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
margin:0;background:#fff}header{padding:18px 28px;border-bottom:1px solid var(--bd);background:var(--bg)}
header h1{margin:0 0 4px;font-size:22px}header .meta{color:var(--mut)}nav{margin-top:8px}nav a{margin-right:14px;
color:var(--acc);text-decoration:none;font-weight:600}main{padding:8px 28px 40px;max-width:1400px}
section{margin-top:26px}h2{font-size:19px;border-bottom:2px solid var(--bd);padding-bottom:4px}h3{font-size:16px;
margin:18px 0 6px}h4{margin:12px 0 4px;font-size:14px}table{border-collapse:collapse;margin:6px 0 10px}
th,td{border:1px solid var(--bd);padding:3px 7px;text-align:left;vertical-align:top}th{background:var(--bg)}
td.n{text-align:right;font-variant-numeric:tabular-nums}.mut{color:var(--mut)}.ok{color:var(--ok)}
.bad{color:var(--bad)}.warn{color:var(--warn)}.chip{display:inline-block;padding:1px 7px;border-radius:9px;
font-size:12px;font-weight:600;border:1px solid currentColor;margin:1px 2px}.flow{display:flex;flex-wrap:wrap;
gap:6px;align-items:center;margin:8px 0}.flow a{text-decoration:none;color:inherit}.flow .st{border:1px solid
var(--bd);border-radius:6px;padding:6px 10px;background:var(--bg)}.arrow{color:var(--mut)}.cards{display:grid;
grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px}.card{border:1px solid var(--bd);
border-radius:8px;padding:10px 12px}.card:target{outline:2px solid var(--acc)}details>summary{cursor:pointer;
color:var(--acc)}pre{background:var(--bg);padding:8px;overflow:auto;max-height:320px;font-size:12px}
.figs{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}svg.fig{background:#fff;border:1px solid var(--bd);border-radius:6px;
max-width:100%;height:auto}svg .ft{font:600 12px system-ui,sans-serif;fill:#111}svg .fl{font:11px system-ui,
sans-serif;fill:#374151}svg .tk{font:10px system-ui,sans-serif;fill:#6b7280}svg .ax{stroke:#9ca3af}svg .gr{
stroke:#f3f4f6}.side{display:flex;gap:18px;flex-wrap:wrap;align-items:flex-start}.browser .controls{display:flex;
gap:10px;align-items:center;flex-wrap:wrap;margin:8px 0}.browser input[type=search]{width:320px;padding:5px 8px;
border:1px solid #cbd5e1;border-radius:6px}table.pairs{width:100%}table.pairs td{font-size:13px}
table.pairs td.q{width:24%}table.pairs td.p{width:24%}.neg{margin:0 0 6px;padding:3px 6px;border-left:3px solid
var(--bd)}.neg.risky{border-left-color:var(--bad);background:#fef2f2}.sus{margin:0 0 6px;padding:3px 6px;
border-left:3px solid var(--warn);background:#fffbeb}.id{font-family:ui-monospace,monospace;font-size:12px;
color:var(--mut)}.d{font-family:ui-monospace,monospace;font-size:12px}.rank{margin:0;padding-left:20px}
.rank li.rel{color:var(--ok);font-weight:600}.q-item{border:1px solid var(--bd);border-radius:6px;padding:6px 10px;
margin:6px 0}.cols{display:grid;grid-template-columns:1fr 1fr;gap:12px}#js-errors:empty{display:none}
.txt{display:-webkit-box;-webkit-line-clamp:3;-webkit-box-orient:vertical;overflow:hidden;cursor:pointer}
.txt.open{display:block}#js-errors{color:var(--bad);border:1px solid var(--bad);padding:6px;margin:8px 28px}
"""

# The triplet browser: rows are built from the inline JSON with textContent (never innerHTML), so a corpus text
# cannot inject markup. `#search=<text>` in the URL pre-fills the first browser's search (a link to one query).
JS = r"""
(function(){
var errs=document.getElementById('js-errors');
window.addEventListener('error',function(e){errs.textContent+=(e.message||'error')+'\n';});
var data=JSON.parse(document.getElementById('hnm-data').textContent);
function el(tag,cls,text){var e=document.createElement(tag);if(cls)e.className=cls;if(text!=null)e.textContent=text;return e;}
function num(v){return (v==null)?'–':(+v).toFixed(3);}
function docText(b,id){var t=b.docs[id];return t==null?'(text not available)':t;}
function render(root,b){
  var tbody=root.querySelector('tbody');
  b.pairs.forEach(function(p,i){
    var tr=el('tr','pair');tr.dataset.i=i;
    var hay=(p.query_id+' '+(b.queries[p.query_id]||'')+' '+p.positive_id).toLowerCase();
    tr.dataset.hay=hay;tr.dataset.flagged=(p.risky||p.suspected.length)?'1':'0';
    var q=el('td','q');q.appendChild(el('div','id',p.query_id+' · picked by '+p.picked));
    q.appendChild(el('div',null,b.queries[p.query_id]||'(text not available)'));tr.appendChild(q);
    var pc=el('td','p');pc.appendChild(el('div','id',p.positive_id));pc.appendChild(el('div','txt',docText(b,p.positive_id)));
    tr.appendChild(pc);
    var nc=el('td','ns');
    if(!p.negatives.length)nc.appendChild(el('div','mut','no negative mined'));
    p.negatives.forEach(function(n){
      var d=el('div','neg'+(n.risky?' risky':''));
      var h=el('div','id',n.doc_id+' · '+(n.source||'?')+(n.rank!=null?' · rank '+n.rank:''));
      d.appendChild(h);
      d.appendChild(el('div','d','d(Q,D) '+num(n.d_qd)+'  d(Q,PD) '+num(n.d_qp)+'  d(PD,D) '+num(n.d_pd)+'  risk '+num(n.risk)));
      n.flags.forEach(function(f){d.appendChild(el('span','chip '+(f==='above-positive'?'warn':'bad'),f));});
      d.appendChild(el('div','txt',docText(b,n.doc_id)));nc.appendChild(d);});
    p.suspected.forEach(function(s){
      var d=el('div','sus');d.appendChild(el('span','chip warn','suspected positive'+(s.source?' ('+s.source+')':'')));
      d.appendChild(el('span','id',' '+s.doc_id+(s.rank!=null?' · rank '+s.rank:'')));
      d.appendChild(el('div','d','d(Q,D) '+num(s.d_qd)+'  d(Q,PD) '+num(s.d_qp)+'  d(PD,D) '+num(s.d_pd)+'  risk '+num(s.risk)));
      d.appendChild(el('div','txt',docText(b,s.doc_id)));nc.appendChild(d);});
    tr.appendChild(nc);tr.appendChild(el('td','n',num(p.risk)));tbody.appendChild(tr);
  });
  var input=root.querySelector('input[type=search]'),only=root.querySelector('input.flagged'),
      sort=root.querySelector('select.sort'),count=root.querySelector('.count');
  function apply(){
    var t=input.value.trim().toLowerCase(),shown=0;
    tbody.querySelectorAll('tr.pair').forEach(function(tr){
      var ok=(!t||tr.dataset.hay.indexOf(t)>=0)&&(!only.checked||tr.dataset.flagged==='1');
      tr.hidden=!ok;if(ok)shown++;});
    count.textContent='showing '+shown+' of '+b.pairs.length+' sampled pairs';
  }
  function order(){
    var rows=Array.prototype.slice.call(tbody.querySelectorAll('tr.pair')),how=sort.value;
    function r(tr){var v=b.pairs[+tr.dataset.i].risk;return v==null?-1e9:v;}
    rows.sort(function(a,c){
      if(how==='risk-desc')return r(c)-r(a)||(+a.dataset.i)-(+c.dataset.i);
      if(how==='risk-asc')return r(a)-r(c)||(+a.dataset.i)-(+c.dataset.i);
      if(how==='query'){var x=b.pairs[+a.dataset.i].query_id,y=b.pairs[+c.dataset.i].query_id;return x<y?-1:x>y?1:0;}
      return (+a.dataset.i)-(+c.dataset.i);});
    rows.forEach(function(tr){tbody.appendChild(tr);});
  }
  tbody.addEventListener('click',function(e){if(e.target.classList.contains('txt'))e.target.classList.toggle('open');});
  input.addEventListener('input',apply);only.addEventListener('change',apply);
  sort.addEventListener('change',function(){order();apply();});
  root.querySelectorAll('th[data-sort]').forEach(function(th){th.addEventListener('click',function(){
    sort.value=sort.value==='risk-desc'?'risk-asc':'risk-desc';order();apply();});});
  return {input:input,apply:apply};
}
var browsers=[];
document.querySelectorAll('.browser').forEach(function(root){browsers.push(render(root,data.browsers[+root.dataset.browser]));});
var m=/[#&]search=([^&]*)/.exec(location.hash);
if(m&&browsers.length){browsers[0].input.value=decodeURIComponent(m[1]);}
browsers.forEach(function(b){b.apply();});
document.body.dataset.ready='1';
})();
"""
