"""The viewer's single page (HTML, CSS and plain JavaScript; no external resources)."""

PAGE_HTML = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>ps1dask viewer</title>
<style>
:root { --bg:#101317; --panel:#181d23; --fg:#e6e6e6; --dim:#96a0ad; --acc:#3b6ea5; --bad:#e0604f; --ok:#62c462; }
* { box-sizing:border-box; }
html, body { height:100%; }
body { margin:0; font:14px/1.35 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--fg); display:flex; flex-direction:column; }
header { padding:8px 14px; background:#0a0c0f; border-bottom:1px solid #2a313b; display:flex; gap:16px; align-items:baseline; }
header h1 { font-size:16px; margin:0; font-weight:600; }
header .meta { color:var(--dim); font-size:12px; }
#layout { flex:1; display:flex; min-height:0; }
aside { width:260px; border-right:1px solid #2a313b; display:flex; flex-direction:column; background:var(--panel); }
aside .search { padding:8px; border-bottom:1px solid #2a313b; }
aside input { width:100%; background:#222932; color:var(--fg); border:1px solid #394250; border-radius:4px; padding:4px 6px; }
#items { flex:1; overflow-y:auto; }
.item { padding:5px 10px; cursor:pointer; border-bottom:1px solid #20262e; font-size:12px; }
.item:hover { background:#222a33; }
.item.sel { background:var(--acc); }
.item .sub { color:var(--dim); font-family:ui-monospace, Menlo, monospace; font-size:10px; }
.item.sel .sub { color:#dde; }
.dot { display:inline-block; width:7px; height:7px; border-radius:50%; margin-left:2px; background:var(--ok); }
.dot.bad { background:var(--bad); }
#more { margin:6px; background:#222932; color:var(--fg); border:1px solid #394250; border-radius:4px; padding:4px; cursor:pointer; }
section#main { flex:1; overflow:auto; padding:12px 16px; }
#title .id { font-size:18px; font-weight:600; }
#title .coord { color:var(--dim); font-family:ui-monospace, Menlo, monospace; font-size:12px; }
.controls { display:flex; flex-wrap:wrap; gap:10px 16px; align-items:center; margin:10px 0; font-size:13px; }
.controls label { color:var(--dim); }
.controls select, .controls button { background:#222932; color:var(--fg); border:1px solid #394250; border-radius:4px; padding:3px 7px; }
.bands button { min-width:34px; cursor:pointer; }
.bands button.sel { background:var(--acc); border-color:var(--acc); }
.bands button.bad { color:var(--bad); }
#stage { position:relative; display:inline-block; background:#000; border:1px solid #2a313b; }
#view { display:block; width:var(--view, 480px); height:var(--view, 480px); image-rendering:pixelated; }
#msg { position:absolute; left:8px; bottom:6px; font-size:12px; color:#ffd479; text-shadow:0 0 3px #000; }
#epochinfo { font-family:ui-monospace, Menlo, monospace; font-size:12px; color:var(--dim); min-width:220px; display:inline-block; }
#lc { margin-top:12px; }
#lcimg { max-width:100%; background:#fff; border-radius:4px; }
.hint { color:var(--dim); font-size:11px; margin-top:6px; }
</style></head>
<body>
<header><h1>ps1dask viewer</h1><span class="meta" id="storemeta">loading…</span></header>
<div id="layout">
<aside>
  <div class="search"><input type="search" id="q" placeholder="search id or skycell"></div>
  <div id="items"></div>
  <button id="more" hidden>more…</button>
</aside>
<section id="main">
  <div id="title"><span class="id" id="pid"></span> <span class="coord" id="pcoord"></span></div>
  <div class="controls">
    <span class="bands" id="bands"></span>
    <label>stretch <select id="stretch"></select></label>
    <label>autoscale <select id="autoscale">
      <option value="99">99%</option><option value="99.5" selected>99.5%</option>
      <option value="99.9">99.9%</option><option value="100">min/max</option></select></label>
    <label>contrast <input type="range" id="contrast" min="-3" max="3" step="0.25" value="0">
      <span id="contrastval">1.00</span></label>
    <label><input type="checkbox" id="invert"> invert</label>
    <label>colour <select id="method"></select></label>
  </div>
  <div class="controls" id="warpcontrols" hidden>
    <label>epoch <input type="range" id="epoch" min="-1" max="0" step="1" value="-1"></label>
    <span id="epochinfo">stack</span>
    <button id="blink" type="button">▶ blink</button>
    <label>speed <select id="speed"><option value="800">slow</option><option value="400" selected>normal</option><option value="150">fast</option></select></label>
  </div>
  <div id="stage"><img id="view" alt="cutout"><div id="msg"></div></div>
  <div class="hint">North up, east left. Keys: ←/→ position, b blink, [ / ] epoch.</div>
  <div id="lc" hidden><img id="lcimg" alt="light curve"></div>
</section>
</div>
<script>
(function () {
  'use strict';
  var S = { info: null, items: [], total: 0, q: '', pos: null, detail: null, band: 'colour',
            stretch: 'asinh', autoscale: '99.5', contrast: 0, invert: false, method: 'lupton',
            epoch: -1, blinkTimer: null };
  var $ = function (id) { return document.getElementById(id); };
  var view = $('view'), msg = $('msg');
  window.viewer = S;  // for tests and the curious

  function getJSON(url) {
    return fetch(url).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error(body.error || r.statusText); }
        return body;
      });
    });
  }
  function statusBad(st) { return Object.keys(st).some(function (f) { return st[f] !== 'ok'; }); }
  function fmt(x, n) { return (x === null || x === undefined) ? '–' : Number(x).toFixed(n); }

  function imageURL() {
    var p = new URLSearchParams();
    p.set('band', S.band);
    p.set('stretch', S.stretch);
    p.set('autoscale', S.autoscale);
    p.set('contrast', Math.pow(2, S.contrast).toFixed(4));
    if (S.invert) { p.set('invert', '1'); }
    if (S.band === 'colour') { p.set('method', S.method); if (S.info.colour) { p.set('colour', S.info.colour); } }
    else if (S.epoch >= 0) { p.set('epoch', String(S.epoch)); }
    return '/image/' + S.pos + '.png?' + p.toString();
  }

  function render() {
    if (S.pos === null) { return; }
    var url = imageURL();
    if (view.getAttribute('src') !== url) {
      msg.textContent = 'rendering…';
      view.setAttribute('src', url);
    }
    $('contrastval').textContent = Math.pow(2, S.contrast).toFixed(2);
    Array.prototype.forEach.call(document.querySelectorAll('#bands button'), function (b) {
      b.classList.toggle('sel', b.getAttribute('data-band') === S.band);
    });
    updateEpochInfo();
    writeHash();
  }
  view.addEventListener('load', function () { msg.textContent = ''; view.setAttribute('data-loaded', view.getAttribute('src')); });
  view.addEventListener('error', function () {
    fetch(view.getAttribute('src')).then(function (r) { return r.json(); })
      .then(function (b) { msg.textContent = b.error || 'no image'; })
      .catch(function () { msg.textContent = 'no image'; });
  });

  function epochsOf(band) {
    if (!S.detail || !S.detail.epochs || !S.detail.epochs[band]) { return []; }
    return S.detail.epochs[band];
  }
  function updateEpochInfo() {
    var box = $('warpcontrols');
    if (!S.info || !S.info.warps) { box.hidden = true; return; }
    box.hidden = false;
    var eps = S.band === 'colour' ? [] : epochsOf(S.band);
    var slider = $('epoch');
    slider.max = String(Math.max(eps.length - 1, -1));
    slider.disabled = S.band === 'colour' || eps.length === 0;
    if (S.epoch >= eps.length) { S.epoch = -1; }
    slider.value = String(S.epoch);
    var text;
    if (S.band === 'colour') { text = 'stack (pick a filter to see its warps)'; }
    else if (S.epoch < 0) { text = S.band + ' stack · ' + eps.length + ' warps'; }
    else {
      var e = eps[S.epoch];
      text = S.band + ' warp ' + (S.epoch + 1) + '/' + eps.length + ' · MJD ' + fmt(e.mjd, 5) + ' · ' + e.status;
    }
    $('epochinfo').textContent = text;
  }

  function stopBlink() {
    if (S.blinkTimer) { clearInterval(S.blinkTimer); S.blinkTimer = null; }
    $('blink').textContent = '▶ blink';
  }
  function startBlink() {
    if (S.band === 'colour') {
      var withWarps = S.info.filters.split('').filter(function (f) { return epochsOf(f).length > 0; });
      if (!withWarps.length) { return; }
      S.band = withWarps[withWarps.length - 1];
    }
    var good = epochsOf(S.band).filter(function (e) { return e.status === 'ok'; }).map(function (e) { return e.epoch; });
    if (!good.length) { msg.textContent = 'no good warps in ' + S.band; return; }
    good.forEach(function (k) { var im = new Image(); var save = S.epoch; S.epoch = k; im.src = imageURL(); S.epoch = save; });
    var n = 0;
    S.epoch = good[0];
    render();
    S.blinkTimer = setInterval(function () {
      n = (n + 1) % good.length;
      S.epoch = good[n];
      render();
    }, Number($('speed').value));
    $('blink').textContent = '❚❚ stop';
  }

  function buildBands() {
    var box = $('bands');
    box.replaceChildren();
    var names = (S.info.colour ? ['colour'] : []).concat(S.info.filters.split(''));
    names.forEach(function (f) {
      var b = document.createElement('button');
      b.type = 'button';
      b.textContent = f === 'colour' ? 'colour (' + S.info.colour + ')' : f;
      b.setAttribute('data-band', f);
      b.addEventListener('click', function () { stopBlink(); S.band = f; if (f === 'colour') { S.epoch = -1; } render(); });
      box.appendChild(b);
    });
  }

  function markBands() {
    Array.prototype.forEach.call(document.querySelectorAll('#bands button'), function (b) {
      var f = b.getAttribute('data-band');
      var st = S.detail && S.detail.status[f];
      b.classList.toggle('bad', !!st && st !== 'ok');
      b.title = st ? f + ' stack: ' + st : '';
    });
  }

  function select(i) {
    stopBlink();
    S.pos = i;
    Array.prototype.forEach.call(document.querySelectorAll('.item'), function (el) {
      el.classList.toggle('sel', Number(el.getAttribute('data-index')) === i);
    });
    return getJSON('/api/position/' + i).then(function (d) {
      if (S.pos !== i) { return; }
      S.detail = d;
      $('pid').textContent = d.id;
      var st = Object.keys(d.status).map(function (f) { return f + ':' + d.status[f]; }).join(' ');
      $('pcoord').textContent = 'RA ' + fmt(d.ra, 6) + ' Dec ' + fmt(d.dec, 6) + ' · ' + d.skycell + ' · #' + d.index + ' · ' + st;
      markBands();
      if (S.info.warps) {
        $('lc').hidden = false;
        $('lcimg').src = '/lightcurve/' + i + '.png';
      }
      render();
    }).catch(function (e) { msg.textContent = String(e.message || e); });
  }

  function addItems(items) {
    var box = $('items');
    items.forEach(function (it) {
      var el = document.createElement('div');
      el.className = 'item' + (it.index === S.pos ? ' sel' : '');
      el.setAttribute('data-index', it.index);
      // built as nodes, never as HTML: ids, filters and statuses come from the store
      var head = document.createElement('div');
      head.textContent = it.id + ' ';
      Object.keys(it.status).forEach(function (f) {
        var dot = document.createElement('span');
        dot.className = 'dot' + (it.status[f] === 'ok' ? '' : ' bad');
        dot.title = f + ': ' + it.status[f];
        head.appendChild(dot);
      });
      var sub = document.createElement('div');
      sub.className = 'sub';
      sub.textContent = fmt(it.ra, 5) + ' ' + fmt(it.dec, 5) + ' · ' + it.skycell;
      el.appendChild(head);
      el.appendChild(sub);
      el.addEventListener('click', function () { select(it.index); });
      box.appendChild(el);
    });
  }

  function loadItems(reset) {
    if (reset) { S.items = []; $('items').replaceChildren(); }
    var url = '/api/positions?offset=' + S.items.length + '&limit=200&q=' + encodeURIComponent(S.q);
    return getJSON(url).then(function (r) {
      S.total = r.total;
      S.items = S.items.concat(r.items);
      addItems(r.items);
      $('more').hidden = S.items.length >= S.total;
      return r;
    });
  }

  function writeHash() {
    var p = new URLSearchParams();
    p.set('i', S.pos); p.set('band', S.band); p.set('stretch', S.stretch); p.set('autoscale', S.autoscale);
    p.set('contrast', S.contrast); if (S.invert) { p.set('invert', '1'); } p.set('method', S.method);
    if (S.epoch >= 0) { p.set('epoch', S.epoch); }
    history.replaceState(null, '', '#' + p.toString());
  }
  function readHash() {
    var p = new URLSearchParams(location.hash.slice(1));
    if (p.has('band')) { S.band = p.get('band'); }
    if (p.has('stretch')) { S.stretch = p.get('stretch'); }
    if (p.has('autoscale')) { S.autoscale = p.get('autoscale'); }
    if (p.has('contrast')) { S.contrast = Number(p.get('contrast')) || 0; }
    S.invert = p.get('invert') === '1';
    if (p.has('method')) { S.method = p.get('method'); }
    if (p.has('epoch')) { S.epoch = Number(p.get('epoch')); }
    return p.has('i') ? Number(p.get('i')) : 0;
  }
  function syncControls() {
    $('stretch').value = S.stretch; $('autoscale').value = S.autoscale; $('contrast').value = String(S.contrast);
    $('invert').checked = S.invert; $('method').value = S.method;
  }

  function step(delta) {
    var idx = S.items.map(function (it) { return it.index; }).indexOf(S.pos);
    var next = idx + delta;
    if (next >= 0 && next < S.items.length) { select(S.items[next].index); }
  }

  getJSON('/api/info').then(function (info) {
    S.info = info;
    $('storemeta').textContent = info.name + ' · ' + info.n_positions + ' positions · filters ' + info.filters +
      ' · ' + info.width + '×' + info.height + ' px' + (info.warps ? ' · warps' : '');
    document.title = 'ps1dask viewer: ' + info.name;
    info.stretches.forEach(function (s) { var o = document.createElement('option'); o.value = s; o.textContent = s; $('stretch').appendChild(o); });
    info.methods.forEach(function (m) { var o = document.createElement('option'); o.value = m; o.textContent = m; $('method').appendChild(o); });
    var view = Math.max(256, Math.min(640, info.width * Math.max(1, Math.floor(512 / info.width))));
    document.documentElement.style.setProperty('--view', view + 'px');
    buildBands();
    var first = readHash();
    if (!info.colour && S.band === 'colour') { S.band = info.filters[0]; }
    syncControls();
    return loadItems(true).then(function () {
      if (info.n_positions > 0) { return select(Math.min(Math.max(first, 0), info.n_positions - 1)); }
      msg.textContent = 'the store has no positions';
    });
  }).catch(function (e) { $('storemeta').textContent = 'error: ' + (e.message || e); });

  $('stretch').addEventListener('change', function (e) { S.stretch = e.target.value; render(); });
  $('autoscale').addEventListener('change', function (e) { S.autoscale = e.target.value; render(); });
  $('contrast').addEventListener('input', function (e) { S.contrast = Number(e.target.value); render(); });
  $('invert').addEventListener('change', function (e) { S.invert = e.target.checked; render(); });
  $('method').addEventListener('change', function (e) { S.method = e.target.value; render(); });
  $('epoch').addEventListener('input', function (e) { stopBlink(); S.epoch = Number(e.target.value); render(); });
  $('blink').addEventListener('click', function () { if (S.blinkTimer) { stopBlink(); } else { startBlink(); } });
  $('speed').addEventListener('change', function () { if (S.blinkTimer) { stopBlink(); startBlink(); } });
  $('more').addEventListener('click', function () { loadItems(false); });
  var timer = null;
  $('q').addEventListener('input', function (e) {
    clearTimeout(timer);
    timer = setTimeout(function () { S.q = e.target.value; loadItems(true); }, 200);
  });
  document.addEventListener('keydown', function (e) {
    if (e.target.tagName === 'INPUT' && e.target.type === 'search') { return; }
    if (e.key === 'ArrowRight' || e.key === 'ArrowDown') { step(1); e.preventDefault(); }
    else if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') { step(-1); e.preventDefault(); }
    else if (e.key === 'b') { if (S.blinkTimer) { stopBlink(); } else { startBlink(); } }
    else if ((e.key === '[' || e.key === ']') && S.band !== 'colour') {
      var n = epochsOf(S.band).length;
      if (n) { stopBlink(); S.epoch = Math.max(-1, Math.min(n - 1, S.epoch + (e.key === ']' ? 1 : -1))); render(); }
    }
  });
})();
</script>
</body></html>
"""
