"""What the review pages inline: the stylesheet, and the plain scripts of the study page (MAIN_JS), an
event page (DETAIL_JS), and the column sorting of the tables of a batch's index and of a study's events
in time order (SORT_JS), with what Back finds again on those two pages (KEEP_JS). No fonts, images or scripts from elsewhere: each page stays one self-contained file.
"""

CSS = """
:root{--fg:#1d2430;--mut:#5b6575;--bg:#f5f6f8;--card:#fff;--line:#d9dde3;--acc:#b3261e;--acc2:#8f5200;--sel:#1f5fbf;--faint:#6b7280}
*{box-sizing:border-box}body{margin:0 auto;max-width:1200px;padding:0 16px 24px;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
h1{font-size:1.45rem;margin:.5rem 0;overflow-wrap:anywhere}h2{font-size:1.1rem;margin:1.2rem 0 .4rem}h3{font-size:.95rem;color:var(--mut);margin:.6rem 0}
.ruo{background:#fff4ce;border:1px solid #e0c200;border-radius:0 0 6px 6px;padding:6px 12px;font-size:.9rem}
.warnings ul{margin:0;padding:6px 12px 6px 28px;background:#fff4ce;border:1px solid #e0c200;border-radius:6px}
header nav{display:flex;flex-wrap:wrap;gap:.2rem 1.5rem;margin:.3rem 0}header nav span{color:var(--mut)}
a{color:var(--sel)}.hint{color:var(--mut);font-size:.88rem;margin:.2rem 0 .5rem}kbd{border:1px solid var(--line);border-radius:3px;padding:0 4px;background:#fff;font-size:.8rem}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(340px,100%),1fr));gap:0 24px;align-items:start}
.facts dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0;background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px 12px}
.facts dt{color:var(--mut)}.facts dd{margin:0;overflow-wrap:anywhere}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:10px}
.tile{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px 12px}.tile .k{color:var(--mut);font-size:.85rem}
.tile .v{font-size:1.5rem;font-weight:600}.tile .s{color:var(--mut);font-size:.82rem}
.timeline-scroll{overflow-x:auto}svg.timeline{width:100%;min-width:640px;height:auto;background:var(--card);border:1px solid var(--line);border-radius:6px;display:block}
.scroll-cue{display:none;margin:2px 0 0;font-size:.85em;color:var(--mut)}@media (max-width:700px){.scroll-cue{display:block}}
.plot{fill:#fff}.grid{stroke:#eceef1}.xtick{stroke:var(--faint)}.tick{font-size:11px;fill:var(--mut)}
.area{fill:rgba(31,95,191,.07)}.gap{fill:url(#hatch);stroke:none}.noview{fill:#2b2f36;fill-opacity:.18;stroke:none}tr.noview td{color:var(--faint)}circle.point{stroke:none}circle.score.point{fill:var(--sel)}circle.raw.point{fill:var(--faint)}.score{fill:none;stroke:var(--sel);stroke-width:1.4}.raw{fill:none;stroke:var(--faint);stroke-width:.8}
.thr{stroke-width:1.2}.thr.enter{stroke:var(--acc);stroke-dasharray:6 4}.thr.leave{stroke:var(--acc2);stroke-dasharray:2 3}
.thr-label{font-size:11px;paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}.thr-label.enter{fill:var(--acc)}.thr-label.leave{fill:var(--acc2)}
.span rect{fill:rgba(179,38,30,.13);stroke:var(--acc);stroke-width:1}.span circle{fill:var(--acc)}
.span:hover rect,.span.selected rect{fill:rgba(31,95,191,.30);stroke:var(--sel)}
.span-label{font-size:10px;fill:var(--acc);font-weight:600;paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}
svg.timeline :is(.area,.score,.raw,.point,.grid,.xtick,.tick,.span-label,.thr,.thr-label){pointer-events:none}
.pager{margin:.4rem 0;display:flex;flex-wrap:wrap;gap:4px;align-items:center}.pager a{padding:1px 8px;border:1px solid var(--line);border-radius:4px;background:#fff;text-decoration:none}
.pager a[aria-current]{background:var(--sel);color:#fff}
.cards{list-style:none;padding:0;margin:0;display:grid;grid-template-columns:repeat(auto-fill,minmax(172px,1fr));gap:10px}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:6px;display:flex;flex-direction:column;gap:2px;scroll-margin:80px}
html:not(.js) .card:target,.card.selected{outline:3px solid var(--sel);outline-offset:1px}
.card .thumb{display:flex;align-items:center;justify-content:center;aspect-ratio:1;background:#111;border-radius:4px;overflow:hidden}
.card img{width:100%;height:100%;object-fit:contain}.nothumb{color:#aaa;font-size:.8rem}.card .title{text-decoration:none}
.score{font-weight:600;color:var(--acc)}.score.low{font-weight:400;color:var(--mut)}.cls{color:var(--mut)}.card small{color:var(--mut)}
details summary{cursor:pointer;color:var(--mut);margin-bottom:.4rem}.card.top{font-size:.9rem}
.page{display:none}.page:first-child{display:block}.js .page{display:none}.js .page.current{display:block}
html:not(.js) .pages:has(:target)>.page{display:none}html:not(.js) .pages:has(:target)>.page:is(:target,:has(:target)){display:block}
figure{margin:1rem 0 0}figure img{max-width:100%;width:360px;border-radius:6px;background:#111}figcaption{color:var(--mut);font-size:.85rem}
.scroll{overflow:auto;max-height:70vh;border:1px solid var(--line);border-radius:6px;background:#fff}
table{border-collapse:collapse;width:100%;font-size:.88rem}th,td{padding:3px 8px;border-bottom:1px solid #eceef1;text-align:right;white-space:nowrap}
th{position:sticky;top:0;background:#eef0f3}.studies :is(td,th):is(:nth-child(-n+2),:nth-child(n+8)){text-align:left}.studies td:is(:first-child,:nth-child(n+8)){white-space:normal;overflow-wrap:anywhere}
.events .text{text-align:left}tr.peak{background:#fde8e6;font-weight:600}caption{caption-side:top;text-align:left;padding:4px 8px;color:var(--mut);font-size:.82rem}
th button{all:unset;cursor:pointer}th button:focus-visible{outline:2px solid var(--sel);outline-offset:2px}
th[aria-sort=ascending] button::after{content:" \u25b2";content:" \u25b2"/""}th[aria-sort=descending] button::after{content:" \u25bc";content:" \u25bc"/""}
.status.ok{color:#1e7a34}.status.failed,.warn{color:var(--acc);font-weight:600}.status.skipped,.status.reused{color:var(--mut)}
footer{margin-top:1.5rem;color:var(--mut);font-size:.8rem}
.vh,.skip:not(:focus){position:absolute;width:1px;height:1px;margin:-1px;padding:0;border:0;overflow:hidden;clip-path:inset(50%);white-space:nowrap}
.skip{position:absolute;left:8px;top:8px;z-index:1;background:#fff;padding:4px 10px;border:2px solid var(--sel);border-radius:4px}
.keys label{white-space:nowrap;margin-left:.5rem}
@media print{details:not([open]){display:none}.scroll{max-height:none;overflow:visible}.timeline-scroll{overflow:visible}.page{display:block!important}
 .pager,.keys,.skip{display:none}.card.selected{outline:none}th{position:static}.card,.tile,figure,tr{break-inside:avoid}h2,h3{break-after:avoid}}
"""

# The single-key shortcuts (WCAG 2.1.4: they can be turned off). keysOn() reads the checkbox of
# report_svg.keys_hint, whose state is remembered in localStorage (file:// pages may refuse it: then it
# is on at each load). A change made on another page of the study (another tab, or the page before,
# whose write can land after this page has read the setting) reaches this one as a 'storage' event,
# which sets the box from the stored value as it is now, not from the event's: the page before's write
# can also be announced after this page's own later change (a full test run under load), and the
# store already holds the later one. A page shown again by the browser's Back (kept whole in its back-forward cache, or
# loaded again with its form state restored) reads the store again at 'pageshow': the page after may have turned the
# keys off (after Back they were on, the box ticked, the store saying off).
# skipKey(e) is true for keys the page must leave alone: shortcuts off, a modifier held (Shift too: Shift+arrow extends a
# selection in caret browsing, QA 122 #8), focus in a form field that types (not a checkbox or button: QA 122 #2, j did
# nothing after a click on the box itself or on a column's sort button), or an arrow key in a scroll box (.scroll,
# .timeline-scroll: they scroll it; QA 119 #2: j/k there did nothing, and the timeline's box is the study page's second Tab stop).
_KEYS_JS = """var box=document.getElementById('shortcuts');
function readKeys(){try{if(box)box.checked=localStorage.getItem('capsule-triage-shortcuts')!=='off';}catch(x){}}
readKeys();
if(box)box.addEventListener('change',function(){try{localStorage.setItem('capsule-triage-shortcuts',box.checked?'on':'off');}catch(x){}});
window.addEventListener('storage',function(e){if(e.key==='capsule-triage-shortcuts'||e.key===null)readKeys();});
window.addEventListener('pageshow',readKeys);
function skipKey(e){var t=e.target;return (box&&!box.checked)||e.altKey||e.ctrlKey||e.metaKey||e.shiftKey||/^(TEXTAREA|SELECT)$/.test(t.tagName)
 ||(t.tagName==='INPUT'&&t.type!=='checkbox')||!!(/^Arrow/.test(e.key)&&t.closest&&t.closest('.scroll,.timeline-scroll'));}
"""

# j/k move to the next/previous card, the page keeping its place itself; the address's #event-N follows 250 ms after the
# last press, replaced, not a new history entry (QA 85 #3, rev81 #1: every press set the address, and Chromium throttles
# over ~200 in 10 s, replaceState too, so holding j stopped at #200; so :target outlines a card only without scripts;
# a link the reader follows meanwhile, a span or a page, wins over the address still to be written, even one to the
# address the bar still shows, which fires no hashchange: rev82 #1; a page link leaves no event current: rev82 #2):
# its title link gets focus and aria-current, and #announce (a polite live region) says "Event 3 of 117, peak 0.998, at 1:02.5" (" (last event)" at the end: j there
# announces it again, so a screen reader hears why nothing moved). Lazy thumbnails load before printing, and
# every folded section is printed (the events in time order, the top frames, the hour strips: opened for the
# printout, folded again after; rev36, QA 73 #1). The print stylesheet alone would hide them.
MAIN_JS = """(function(){""" + _KEYS_JS + """
var live=document.getElementById('announce'),data=JSON.parse(document.getElementById('report-data').textContent),ev=data.events,size=data.page_size,cur=-1;
var pages=document.querySelectorAll('.page'),links=document.querySelectorAll('.pager a');
document.documentElement.classList.add('js');
function showPage(p){pages.forEach(function(s,i){s.classList.toggle('current',i===p);});
 links.forEach(function(a){if(a.getAttribute('href')==='#page-'+(p+1))a.setAttribute('aria-current','page');else a.removeAttribute('aria-current');});}
function unselect(){document.querySelectorAll('.selected').forEach(function(e){e.classList.remove('selected');});
 document.querySelectorAll('.card a[aria-current]').forEach(function(a){a.removeAttribute('aria-current');});}
function select(i){cur=i;showPage(Math.floor(cur/size));unselect();
 document.querySelectorAll('[data-rank="'+cur+'"]').forEach(function(e){e.classList.add('selected');});
 var c=document.getElementById('event-'+(cur+1));if(c){c.scrollIntoView({block:'center'});c.querySelector('a.title').setAttribute('aria-current','true');}}
var pending=null;
function address(){if(pending===null)return;clearTimeout(pending);pending=null;var h='#event-'+(cur+1);
 if(location.hash!==h)try{history.replaceState(history.state,'',h);}catch(x){location.hash=h;}}
function sync(){if(pending!==null){clearTimeout(pending);pending=null;}
 var h=location.hash.slice(1),m=/^event-(\\d+)$/.exec(h),p=/^page-(\\d+)$/.exec(h);
 if(m&&+m[1]>=1&&+m[1]<=ev.length)select(+m[1]-1);
 else if(p){unselect();cur=-1;showPage(Math.min(pages.length-1,Math.max(0,+p[1]-1)));}
 else{unselect();showPage(cur<0?0:Math.floor(cur/size));}}
function go(i){if(!ev.length)return;i=Math.max(0,Math.min(ev.length-1,i));
 select(i);if(pending!==null)clearTimeout(pending);pending=setTimeout(address,250);
 var a=document.querySelector('#event-'+(i+1)+' a.title');if(a)a.focus({preventScroll:true});
 if(live)live.textContent='Event '+(i+1)+' of '+ev.length+', peak '+ev[i].peak+', at '+ev[i].time
  +(ev.length>1&&i===ev.length-1?' (last event)':ev.length>1&&i===0?' (first event)':'');}
document.addEventListener('keydown',function(e){
 if(skipKey(e))return;
 var k=e.key,m=pending===null&&/^#event-(\\d+)$/.exec(location.hash),p=pending===null&&/^#page-(\\d+)$/.exec(location.hash);
 if(m&&+m[1]>=1&&+m[1]<=ev.length)cur=+m[1]-1;
 var card=e.target.closest&&e.target.closest('.card[data-rank]');if(card)cur=+card.dataset.rank;
 var first=p?Math.min(pages.length-1,Math.max(0,+p[1]-1))*size:-1;
 if(first>=0&&Math.floor(cur/size)!==first/size&&/^(j|k|ArrowRight|ArrowLeft)$/.test(k))go(first);
 else if(k==='j'||k==='ArrowRight')go(cur+1);else if(k==='k'||k==='ArrowLeft')go(cur<0?0:cur-1);
 else if(k==='Enter'&&cur>=0&&e.target===document.body){address();location.href=ev[cur].href;}else return;
 e.preventDefault();});
document.addEventListener('click',function(e){var a=e.target.closest&&e.target.closest('a[href^="#"]');if(!a||pending===null)return;
 clearTimeout(pending);pending=null;if(a.getAttribute('href')===location.hash)sync();});
window.addEventListener('pagehide',address);
window.addEventListener('hashchange',sync);sync();
window.addEventListener('beforeprint',function(){document.querySelectorAll('img[loading=lazy]').forEach(function(i){i.loading='eager';});
 document.querySelectorAll('details:not([open])').forEach(function(d){d.open=true;d.dataset.printed='1';});});
window.addEventListener('afterprint',function(){document.querySelectorAll('details[data-printed]').forEach(function(d){d.open=false;delete d.dataset.printed;});});
})();"""

# An event page: j/k (arrows) open the next/previous event's page, u/Esc the study page; at the last (first) event j (k)
# says so in #announce (QA 122 #5: nothing happened, nothing was said), changed by a space each press so it is said again.
DETAIL_JS = """(function(){""" + _KEYS_JS + """var live=document.getElementById('announce');
document.addEventListener('keydown',function(e){
if(skipKey(e))return;var rel={j:'next',ArrowRight:'next',k:'prev',ArrowLeft:'prev',u:'up',Escape:'up'}[e.key];
var a=rel&&document.querySelector('a[rel="'+rel+'"]');if(a){e.preventDefault();location.href=a.href;}
else if(rel&&live){e.preventDefault();var t=rel==='next'?'Last event: there is no next one':'First event: there is no previous one';
 live.textContent=live.textContent===t?t+'\\u00a0':t;}});})();"""

# Back to a page the browser did not keep whole (file:// pages never are: it loads them again) finds what the reader
# left (QA 122 #1: the events in time order came back folded, sorted by start, scrolled to the top): which folded
# sections are open (rev109 #6: one the reader folded stays folded), each table's sort and each scroll box's place, down
# and across (rev109 #5: the timeline's box scrolls sideways on a narrow screen), kept in the history entry's state at
# 'pagehide' (after MAIN_JS's address(), which writes the #event-N and keeps the state) and put back at load on a page of
# the same layout (rev110 #9: a report written again between visits, other sections or rows, is not given the old one's
# state); the browser then restores the page's own scroll position over the sections opened.
KEEP_JS = """(function(){var ds=document.querySelectorAll('details'),bs=document.querySelectorAll('.scroll,.timeline-scroll'),ts=document.querySelectorAll('table'),
sig=[ds.length,bs.length,Array.prototype.map.call(ts,function(t){return t.rows.length;}).join(',')].join('/'),
k=history.state&&history.state.kept;
if(k&&k.sig===sig){ds.forEach(function(d,i){d.open=k.open.indexOf(i)>=0;});
 k.sort.forEach(function(s){var b=ts[s[0]]&&ts[s[0]].querySelector('th button[data-col="'+s[1]+'"]');
  for(var n=0;b&&n<2&&b.parentNode.getAttribute('aria-sort')!==s[2];n++)b.click();});
 bs.forEach(function(b,i){var at=k.scroll[i];if(at){b.scrollTop=at[0];b.scrollLeft=at[1];}});}
window.addEventListener('pagehide',function(){var s=Object.assign({},history.state||{}),kept={sig:sig,open:[],sort:[],scroll:[]};
 ds.forEach(function(d,i){if(d.open&&!d.dataset.printed)kept.open.push(i);});
 ts.forEach(function(t,i){var h=t.querySelector('th[aria-sort]'),b=h&&h.querySelector('button');if(b)kept.sort.push([i,b.dataset.col,h.getAttribute('aria-sort')]);});
 bs.forEach(function(b){kept.scroll.push([b.scrollTop,b.scrollLeft]);});s.kept=kept;
 try{history.replaceState(s,'');}catch(x){}});})();"""

# A column of a table (the batch's studies, a study's events in time order) sorts ascending, again
# descending; its th says which (aria-sort, and an arrow from the CSS); numbers as numbers, text in natural order,
# empty cells (no value) last either way (rev36: first when ascending).
SORT_JS = """document.querySelectorAll('th button').forEach(function(b){b.addEventListener('click',function(){
var th=b.parentNode,table=th.closest('table'),col=+b.dataset.col,tb=table.tBodies[0],rows=Array.from(tb.rows),
dir=th.getAttribute('aria-sort')==='ascending'?-1:1;
table.querySelectorAll('th[aria-sort]').forEach(function(h){h.removeAttribute('aria-sort');});
th.setAttribute('aria-sort',dir===1?'ascending':'descending');rows.sort(function(x,y){var a=x.cells[col].dataset.v,c=y.cells[col].dataset.v,
na=a===''?NaN:Number(a),nc=c===''?NaN:Number(c);if((a==='')!==(c===''))return a===''?1:-1;return dir*(!isNaN(na)&&!isNaN(nc)?na-nc:a.localeCompare(c,undefined,{numeric:true}));});
rows.forEach(function(r){tb.appendChild(r);});});});"""
