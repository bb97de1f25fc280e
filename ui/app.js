/* Sluice web UI: three pages over the JSON API (/v1/), hash-routed (#/runs, #/runs/ID, #/workflows[/NAME]).
 * Every text from the server goes in through textContent (never innerHTML). Pages poll with If-None-Match and
 * redraw only what changed, so focus and keyboard position survive the updates. */
(function () {
  'use strict';

  const TOKEN_KEY = 'sluice-token';
  const POLL_MS = 2000;
  const PAGE_SIZE = 25;
  const SVGNS = 'http://www.w3.org/2000/svg';
  const TERMINAL = { succeeded: 1, failed: 1, cancelled: 1 };

  const main = document.getElementById('main');
  const statusEl = document.getElementById('status');
  let authOK = false;          // the last API call was accepted: actions are offered
  let pollTimer = null;
  let viewGen = 0;             // bumps on every navigation; stale async work checks it
  const etags = new Map();     // path -> {etag, data}
  let svgSeq = 0;
  let onResize = null;         // the current page's redraw for a new width (the Gantt)

  /* ---------- small DOM helpers ---------- */
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of kids.flat(Infinity)) if (c !== null && c !== undefined && c !== false) el.append(c.nodeType ? c : String(c));
    return el;
  }
  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
    for (const c of kids.flat(Infinity)) if (c) el.append(c.nodeType ? c : document.createTextNode(String(c)));
    return el;
  }
  function badge(state) { return h('span', { class: 'badge s-' + (state || 'none'), text: state || '—' }); }
  /* A run's state, and "recovered" beside it when on_failure handled a failed step (the run succeeded anyway). */
  function runBadges(run) {
    return [badge(run.state), run.recovered === true || (run.recovered && run.recovered.length)
      ? [' ', h('span', { class: 'badge s-recovered', text: 'recovered', title: 'succeeded after on_failure handled a failed step' })] : null];
  }
  /* The step that failed first, its error and Dataflow's cause (the API's root_cause), as one block. */
  function rootCause(rc, id) {
    if (!rc) return null;
    return h('div', { class: 'root-cause', id: id || null },
      h('span', { class: 'mono rc-step', text: rc.step }), rc.attempt > 1 ? h('span', { class: 'muted', text: ' (attempt ' + rc.attempt + ')' }) : null,
      rc.error ? [': ', h('span', { class: 'rc-error', text: rc.error })] : null,
      rc.failure_cause ? h('div', { class: 'cause' }, h('strong', { text: 'Cause: ' }), rc.failure_cause) : null);
  }
  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toISOString().replace('T', ' ').slice(0, 19) + 'Z';
  }
  function timeEl(iso) { return iso ? h('time', { datetime: iso, text: fmtTime(iso) }) : '—'; }
  function fmtDur(ms) {
    if (ms < 0) ms = 0;
    if (ms < 10000) return (Math.round(ms / 100) / 10) + 's';
    const sec = Math.round(ms / 1000);
    if (sec < 60) return sec + 's';
    const m = Math.floor(sec / 60), r = sec % 60;
    if (m < 60) return m + 'm' + (r ? ' ' + r + 's' : '');
    return Math.floor(m / 60) + 'h ' + (m % 60) + 'm';
  }
  function say(msg, isError) {
    statusEl.textContent = msg || '';
    statusEl.classList.toggle('error', !!isError);
  }
  function consoleUrl(st) {
    return 'https://console.cloud.google.com/dataflow/jobs/' + encodeURIComponent(st.region) + '/' +
      encodeURIComponent(st.job_id) + '?project=' + encodeURIComponent(st.project);
  }

  /* ---------- auth ---------- */
  function token() { try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; } }
  const tokenForm = document.getElementById('token-form');
  const tokenInput = document.getElementById('token-input');
  const tokenShow = document.getElementById('token-show');
  const tokenClear = document.getElementById('token-clear');
  const authState = document.getElementById('auth-state');
  function paintAuth() {
    const t = token();
    tokenClear.hidden = !t;
    tokenShow.hidden = !!t || !tokenForm.hidden;
    authState.textContent = t ? 'Token set for this tab' : authOK ? 'Signed in by the proxy' : 'Not signed in';
  }
  tokenShow.addEventListener('click', () => { tokenForm.hidden = false; paintAuth(); tokenInput.focus(); });
  tokenForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = tokenInput.value.trim();
    if (!t) return;
    try { sessionStorage.setItem(TOKEN_KEY, t); } catch (e) { say('This browser keeps no session storage.', true); }
    tokenInput.value = '';
    tokenForm.hidden = true;
    etags.clear();
    say('');
    paintAuth();
    route();
  });
  tokenClear.addEventListener('click', () => {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* nothing kept */ }
    authOK = false;
    etags.clear();
    paintAuth();
    route();
  });

  /* ---------- the API ---------- */
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  /* GET with ETag revalidation: resolves {data, changed}. */
  async function apiGet(path) {
    const headers = { Accept: 'application/json' };
    const t = token();
    if (t) headers.Authorization = 'Bearer ' + t;
    const prev = etags.get(path);
    if (prev) headers['If-None-Match'] = prev.etag;
    const resp = await fetch(path, { headers, cache: 'no-store' });
    if (resp.status === 304 && prev) { authOK = true; return { data: prev.data, changed: false }; }
    return handle(resp, path);
  }
  async function apiPost(path, body) {
    const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
    const t = token();
    if (t) headers.Authorization = 'Bearer ' + t;
    const resp = await fetch(path, { method: 'POST', headers, body: JSON.stringify(body || {}), cache: 'no-store' });
    return (await handle(resp, null)).data;
  }
  async function handle(resp, path) {
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (resp.status === 401 || resp.status === 403) {
      authOK = false;
      paintAuth();
      tokenForm.hidden = false;
      tokenShow.hidden = true;
      throw new ApiError(resp.status, resp.status === 401
        ? 'The API needs the operator token: paste it above (it stays in this tab only).'
        : 'This identity may not use the API.');
    }
    if (!resp.ok) throw new ApiError(resp.status, (data && data.error && data.error.message) || ('HTTP ' + resp.status));
    authOK = true;
    if (token()) tokenForm.hidden = true;
    paintAuth();
    const etag = resp.headers.get('ETag');
    if (path && etag) etags.set(path, { etag, data });
    return { data, changed: true };
  }
  function showError(e) { say(e && e.message ? e.message : String(e), true); }

  /* ---------- the DAG (dagre lays it out, we draw SVG) ---------- */
  function dagSvg(graph, states, title) {
    const id = 'g' + (++svgSeq);
    const g = new dagre.graphlib.Graph({ multigraph: true });
    g.setGraph({ rankdir: 'TB', nodesep: 26, ranksep: 48, edgesep: 14, marginx: 14, marginy: 14 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const n of graph.nodes) {
      const sub = subLabel(n, states);
      g.setNode(n.id, { width: Math.max(n.id.length * 8.2, sub.length * 6.8) + 30, height: 48, n });
    }
    graph.edges.forEach((e, i) => {
      const label = e.kind === 'on_failure' ? 'on failure' : e.kind === 'choice' ? 'choice' : '';
      g.setEdge(e.from, e.to, { e, label, width: label ? label.length * 6.2 : 0, height: label ? 14 : 0, labelpos: 'c' },
        'e' + i);
    });
    dagre.layout(g);
    const gg = g.graph();
    const W = Math.ceil(gg.width || 100), H = Math.ceil(gg.height || 60);
    const svg = s('svg', { viewBox: '0 0 ' + W + ' ' + H, width: W, height: H, role: 'img', 'aria-labelledby': id + '-t' });
    svg.append(s('title', { id: id + '-t' }, title));
    const defs = s('defs');
    for (const [k, colour] of [['a', '#59636e'], ['f', '#c62828']])
      defs.append(s('marker', { id: id + k, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7,
        orient: 'auto-start-reverse' }, s('path', { d: 'M0,0 L10,5 L0,10 z', fill: colour })));
    svg.append(defs);
    for (const ev of g.edges()) {
      const ed = g.edge(ev);
      const pts = ed.points || [];
      const d = pts.map((p, i) => (i ? 'L' : 'M') + p.x.toFixed(1) + ',' + p.y.toFixed(1)).join(' ');
      const kind = ed.e.kind;
      svg.append(s('path', { class: 'edge ' + kind, d, 'marker-end': 'url(#' + id + (kind === 'on_failure' ? 'f' : 'a') + ')',
        'data-from': ed.e.from, 'data-to': ed.e.to, 'data-kind': kind }));
      if (ed.label) svg.append(s('text', { class: 'edge-label ' + kind, x: ed.x, y: ed.y + 4, 'text-anchor': 'middle' }, ed.label));
    }
    for (const v of g.nodes()) {
      const nd = g.node(v), n = nd.n;
      const st = states ? (states[n.id] || 'none') : 'none';
      const grp = s('g', { class: 'node n-' + st + (n.start ? ' start' : ''), 'data-step': n.id, 'data-state': st,
        transform: 'translate(' + (nd.x - nd.width / 2).toFixed(1) + ',' + (nd.y - nd.height / 2).toFixed(1) + ')' });
      grp.append(s('title', null, n.id + (n.start ? ' (start step)' : '') + (n.join ? ' (join)' : '') +
        (states ? ': ' + st : '')));
      grp.append(s('rect', { width: nd.width, height: nd.height, rx: n.kind === 'hook' ? 24 : 6, class: 'n-' + st }));
      if (n.start) grp.append(s('path', { d: 'M-9,14 L1,24 L-9,34 z', fill: '#16202c' }));
      grp.append(s('text', { x: nd.width / 2, y: 20, 'text-anchor': 'middle' }, n.id));
      grp.append(s('text', { class: 'sub', x: nd.width / 2, y: 37, 'text-anchor': 'middle' }, subLabel(n, states)));
      svg.append(grp);
    }
    return h('div', { class: 'dag' }, svg);
  }
  function subLabel(n, states) {
    if (states) return (states[n.id] || 'not reached') + (n.join ? ' · join' : '');
    return (n.kind === 'hook' ? 'hook' : n.job_name || n.kind) + (n.join ? ' · join' : '') + (n.start ? ' · start' : '');
  }
  function legend() {
    const line = (cls, text) => h('span', null, (() => {
      const svg = s('svg', { width: 34, height: 10, 'aria-hidden': 'true' });
      svg.append(s('line', { x1: 0, y1: 5, x2: 34, y2: 5, class: 'edge ' + cls }));
      return svg;
    })(), ' ' + text);
    return h('p', { class: 'legend' }, line('next', 'next'), line('choice', 'choice (dashed)'),
      line('on_failure', 'on failure (red, dotted)'), h('span', { text: '▶ thick border: start step' }),
      h('span', { text: 'rounded: hook step' }));
  }

  /* ---------- router ---------- */
  function parseHash() {
    const raw = location.hash.replace(/^#/, '') || '/runs';
    const [path, query] = raw.split('?');
    return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query || '') };
  }
  function setPoll(fn, ms) {
    if (pollTimer) clearInterval(pollTimer);
    pollTimer = fn ? setInterval(() => { if (!document.hidden) fn(); }, ms || POLL_MS) : null;
  }
  function route() {
    viewGen++;
    onResize = null;
    setPoll(null);
    say('');
    const { parts, query } = parseHash();
    const page = parts[0] || 'runs';
    document.getElementById('nav-runs').toggleAttribute('aria-current', false);
    document.getElementById('nav-workflows').toggleAttribute('aria-current', false);
    const nav = document.getElementById(page === 'workflows' ? 'nav-workflows' : 'nav-runs');
    nav.setAttribute('aria-current', 'page');
    main.replaceChildren();
    if (page === 'workflows') workflowsPage(parts[1]);
    else if (page === 'runs' && parts[1]) runPage(parts[1]);
    else runsPage(query);
  }
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (onResize) onResize(); }, 100);
  });
  window.addEventListener('hashchange', () => { route(); main.focus({ preventScroll: true }); });

  /* ---------- Workflows page ---------- */
  function workflowsPage(only) {
    const gen = viewGen;
    document.title = 'Workflows · Sluice';
    const list = h('div', { id: 'workflows' });
    const errs = h('section', { id: 'load-errors', 'aria-labelledby': 'errs-h' });
    let shown = null; /* the document drawn last: an unchanged answer (304) is not drawn again */
    main.append(h('h1', { text: only ? 'Workflow ' + only : 'Workflows' }), errs, list);
    async function refresh() {
      let r;
      try { r = await apiGet('/v1/workflows'); } catch (e) { if (gen === viewGen) showError(e); return; }
      if (gen !== viewGen || r.data === shown) return;
      shown = r.data;
      say('');
      const doc = r.data;
      errs.replaceChildren();
      const errors = doc.errors || [];
      if (errors.length) {
        errs.append(h('h2', { id: 'errs-h', text: 'Load errors' }));
        for (const fe of errors) {
          errs.append(h('div', { class: 'card note bad' }, h('strong', { text: fe.file }),
            h('ul', { class: 'errors' }, (fe.errors || []).map((x) => h('li', { text: x })))));
        }
      }
      list.replaceChildren();
      const wfs = (doc.workflows || []).filter((w) => !only || w.name === only);
      if (!wfs.length) list.append(h('p', { class: 'muted', text: only ? 'No workflow of that name is loaded.' : 'No workflows are loaded.' }));
      for (const wf of wfs) list.append(workflowCard(wf));
    }
    /* one workflow's page: its runs x steps grid under the card */
    const grid = only ? runGrid(only, gen) : null;
    if (grid) main.append(grid.el);
    refresh();
    setPoll(() => { refresh(); if (grid) grid.refresh(); }, only ? POLL_MS * 5 : 10000);
  }

  /* The runs x steps grid (GET /v1/workflows/{name}/grid): a column per run, oldest left, newest right; a row per
   * step; each cell coloured by the step's state (and written as a symbol and in its label), with its duration
   * and attempts on hover, linking to the run. Paged like the runs list. */
  const CELL_MARK = { succeeded: '✓', failed: '✗', running: '●', launching: '●', pending: '○', waiting: '○',
                      cancelling: '■', cancelled: '■', skipped: '–' };
  function runGrid(name, gen) {
    const el = h('section', { class: 'card', 'aria-labelledby': 'grid-h', id: 'grid-section' });
    const wrap = h('div', { class: 'table-wrap grid-wrap' });
    const newer = h('button', { type: 'button', text: '← Newer', disabled: true });
    const older = h('button', { type: 'button', text: 'Older →', disabled: true });
    el.append(h('h2', { id: 'grid-h', text: 'Runs × steps' }),
      h('p', { class: 'muted', text: 'The last runs, oldest left; a cell per step: ✓ succeeded, ✗ failed, ● running, ■ cancelled, ○ pending. Hover for duration and attempts; a cell opens its run.' }),
      wrap, h('div', { class: 'pager' }, newer, older));
    const stack = [];
    let cursor = '', next = null, shown = null;
    newer.addEventListener('click', () => { cursor = stack.pop() || ''; refresh(); });
    older.addEventListener('click', () => { if (next) { stack.push(cursor); cursor = next; refresh(); } });
    async function refresh() {
      const p = new URLSearchParams({ limit: String(PAGE_SIZE) });
      if (cursor) p.set('cursor', cursor);
      let r;
      try { r = await apiGet('/v1/workflows/' + encodeURIComponent(name) + '/grid?' + p); } catch (e) { if (gen === viewGen) showError(e); return; }
      if (gen !== viewGen) return;
      next = r.data.next_cursor || null;
      newer.disabled = !cursor;
      older.disabled = !next;
      if (r.data === shown) return;
      shown = r.data;
      const runs = (r.data.runs || []).slice().reverse();
      if (!runs.length) { wrap.replaceChildren(h('p', { class: 'muted', text: 'No runs of ' + name + ' yet.' })); return; }
      const head = h('tr', null, h('th', { scope: 'col', text: 'Step' }), runs.map((run) => h('th', { scope: 'col', class: 'grid-run', 'data-run': run.id },
        h('a', { href: '#/runs/' + encodeURIComponent(run.id), class: 'mono', title: run.id + ' · ' + run.state + (run.recovered ? ' (recovered)' : '') + ' · ' + fmtTime(run.created_at),
          'aria-label': 'Run ' + run.id + ', ' + run.state + (run.recovered ? ', recovered' : ''), text: run.id.slice(0, 4) }),
        h('span', { class: 'dot s-' + (run.recovered ? 'recovered' : run.state), 'aria-hidden': 'true' }))));
      const body = (r.data.steps || []).map((step) => h('tr', { 'data-step': step }, h('th', { scope: 'row', class: 'mono', text: step }),
        runs.map((run) => {
          const c = run.cells[step];
          if (!c) return h('td', { class: 'cell-none', title: step + ': not reached in ' + run.id }, h('span', { class: 'muted', 'aria-label': 'not reached', text: '·' }));
          const tip = step + ' · ' + c.state + (c.duration_ms ? ' · ' + fmtDur(c.duration_ms) : '') + ' · ' + c.attempts +
            (c.attempts === 1 ? ' attempt' : ' attempts') + (c.error ? ' · ' + c.error : '') + ' · run ' + run.id;
          return h('td', { 'data-state': c.state, 'data-run': run.id },
            h('a', { class: 'cell s-' + c.state, href: '#/runs/' + encodeURIComponent(run.id), title: tip, 'aria-label': tip,
              text: (CELL_MARK[c.state] || '?') + (c.attempts > 1 ? c.attempts : '') }));
        })));
      wrap.replaceChildren(h('table', { id: 'grid', class: 'grid' }, h('thead', null, head), h('tbody', null, body)));
    }
    refresh();
    return { el, refresh };
  }
  function workflowCard(wf) {
    const hid = 'wf-' + wf.name.replace(/[^A-Za-z0-9_-]/g, '_');
    const card = h('section', { class: 'card workflow', 'aria-labelledby': hid, 'data-workflow': wf.name });
    card.append(h('h2', { id: hid }, h('a', { href: '#/workflows/' + encodeURIComponent(wf.name), text: wf.name })));
    card.append(h('dl', { class: 'meta' },
      h('dt', { text: 'Version' }), h('dd', { class: 'mono', title: wf.version, text: wf.version.slice(0, 12) }),
      h('dt', { text: 'File' }), h('dd', { class: 'mono', text: wf.file }),
      h('dt', { text: 'Start step' }), h('dd', { text: wf.start }),
      h('dt', { text: 'Steps' }), h('dd', { text: String(wf.steps.length) }),
      h('dt', { text: 'Runs' }), h('dd', null, h('a', { href: '#/runs?workflow=' + encodeURIComponent(wf.name), text: 'runs of ' + wf.name }))));
    card.append(dagSvg(wf.graph, null, 'Graph of workflow ' + wf.name + ', start step ' + wf.start), legend());
    card.append(startForm(wf));
    const src = h('pre', { class: 'source mono', text: 'Loading…' });
    const det = h('details', null, h('summary', { text: 'Source (' + wf.file + ')' }), src);
    det.addEventListener('toggle', async () => {
      if (!det.open || det.dataset.loaded) return;
      try {
        const r = await apiGet('/v1/workflows/' + encodeURIComponent(wf.name));
        src.textContent = r.data.workflow.source;
        det.dataset.loaded = '1';
      } catch (e) { src.textContent = e.message; }
    });
    card.append(det);
    return card;
  }
  function startForm(wf) {
    const fid = 'start-' + wf.name.replace(/[^A-Za-z0-9_-]/g, '_');
    const form = h('form', { class: 'start', 'aria-labelledby': fid + '-h' });
    const fields = [];
    for (const p of wf.params || []) {
      const iid = fid + '-' + p.name.replace(/[^A-Za-z0-9_-]/g, '_');
      let input;
      if (typeof p.default === 'boolean') {
        input = h('select', { id: iid }, h('option', { value: 'true', text: 'true' }), h('option', { value: 'false', text: 'false' }));
        input.value = String(p.default);
      } else {
        input = h('input', { id: iid, type: typeof p.default === 'number' ? 'number' : 'text', required: p.required || null,
          value: p.default !== undefined && p.default !== null ? String(p.default) : null,
          'aria-describedby': p.description ? iid + '-d' : null });
      }
      fields.push({ p, input });
      form.append(h('label', { for: iid, text: p.name + (p.required ? ' (required)' : '') }), input);
      if (p.description) form.append(h('span', { id: iid + '-d', class: 'hint', text: p.description }));
    }
    let free = null;
    if (!wf.declares_params) {
      free = h('input', { id: fid + '-json', type: 'text', placeholder: '{"date": "2026-05-01"}', class: 'mono' });
      form.append(h('label', { for: fid + '-json', text: 'params (JSON, optional)' }), free);
    }
    const btn = h('button', { type: 'submit', class: 'primary', text: 'Start run', disabled: !authOK || null });
    form.append(btn);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const params = {};
      try {
        for (const { p, input } of fields) {
          const v = input.value;
          if (v === '' && !p.required) continue;
          params[p.name] = typeof p.default === 'boolean' ? v === 'true' : typeof p.default === 'number' ? Number(v) : v;
        }
        if (free && free.value.trim()) Object.assign(params, JSON.parse(free.value));
      } catch (e) { say('params must be a JSON object: ' + e.message, true); return; }
      btn.disabled = true;
      try {
        const out = await apiPost('/v1/runs', { workflow: wf.name, params });
        say('Started run ' + out.run.id + '.');
        location.hash = '#/runs/' + encodeURIComponent(out.run.id);
      } catch (e) { showError(e); btn.disabled = false; }
    });
    return h('div', null, h('h3', { id: fid + '-h', text: 'Start a run' }),
      authOK ? null : h('p', { class: 'muted', text: 'Starting a run needs the operator token (or the proxy\'s sign-in).' }), form);
  }

  /* ---------- Runs page ---------- */
  const cursorStack = [];     // cursors of the pages before the current one
  let cursorNow = '';
  let lastFilterKey = '';
  function runsPage(query) {
    const gen = viewGen;
    document.title = 'Runs · Sluice';
    const f = { workflow: query.get('workflow') || '', state: query.get('state') || '',
                failed: query.get('failed') === '1', recovered: query.get('recovered') === '1', q: query.get('q') || '' };
    const key = JSON.stringify(f);
    if (key !== lastFilterKey) { cursorStack.length = 0; cursorNow = ''; lastFilterKey = key; }
    const wfSel = h('select', { id: 'f-workflow', name: 'workflow' }, h('option', { value: '', text: 'any' }));
    if (f.workflow) wfSel.append(h('option', { value: f.workflow, text: f.workflow }));
    wfSel.value = f.workflow;
    const stSel = h('select', { id: 'f-state', name: 'state' }, h('option', { value: '', text: 'any' }),
      ['pending', 'running', 'succeeded', 'failed', 'cancelling', 'cancelled'].map((x) => h('option', { value: x, text: x })));
    stSel.value = f.state;
    const failed = h('input', { type: 'checkbox', id: 'f-failed', name: 'failed', checked: f.failed || null });
    const recov = h('input', { type: 'checkbox', id: 'f-recovered', name: 'recovered', checked: f.recovered || null });
    const q = h('input', { type: 'search', id: 'f-q', name: 'q', value: f.q || null, placeholder: 'run id or job name' });
    const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter runs' },
      h('label', { for: 'f-workflow' }, 'Workflow', wfSel), h('label', { for: 'f-state' }, 'State', stSel),
      h('label', { class: 'check', for: 'f-failed' }, failed, 'any failed step'),
      h('label', { class: 'check', for: 'f-recovered' }, recov, 'recovered'),
      h('label', { for: 'f-q' }, 'Search', q), h('button', { type: 'submit', class: 'primary', text: 'Apply' }));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      if (wfSel.value) p.set('workflow', wfSel.value);
      if (stSel.value) p.set('state', stSel.value);
      if (failed.checked) p.set('failed', '1');
      if (recov.checked) p.set('recovered', '1');
      if (q.value.trim()) p.set('q', q.value.trim());
      const h2 = '#/runs' + (p.toString() ? '?' + p : '');
      if (location.hash === h2) route(); else location.hash = h2;
    });
    const tbody = h('tbody');
    const table = h('div', { class: 'table-wrap' }, h('table', { id: 'runs' },
      h('caption', { class: 'muted', text: 'Newest first' }),
      h('thead', null, h('tr', null, ['Run', 'Workflow', 'State', 'Created', 'Duration', 'Params', 'Failed first'].map((x) => h('th', { scope: 'col', text: x })))),
      tbody));
    const newer = h('button', { type: 'button', text: '← Newer', disabled: true });
    const older = h('button', { type: 'button', text: 'Older →', disabled: true });
    const pageInfo = h('span', { class: 'muted' });
    main.append(h('h1', { text: 'Runs' }), form, table, h('div', { class: 'pager' }, newer, older, pageInfo));
    let next = null, shown = null;
    newer.addEventListener('click', () => { cursorNow = cursorStack.pop() || ''; refresh(); });
    older.addEventListener('click', () => { if (next) { cursorStack.push(cursorNow); cursorNow = next; refresh(); } });
    apiGet('/v1/workflows').then((r) => {
      if (gen !== viewGen) return;
      for (const w of r.data.workflows || []) if (w.name !== f.workflow) wfSel.append(h('option', { value: w.name, text: w.name }));
      wfSel.value = f.workflow;
    }).catch(() => { /* shown by the list below */ });
    async function refresh() {
      const p = new URLSearchParams({ limit: String(PAGE_SIZE) });
      if (f.workflow) p.set('workflow', f.workflow);
      if (f.state) p.set('state', f.state);
      if (f.failed) p.set('failed_step', 'true');
      if (f.recovered) p.set('recovered', 'true');
      if (f.q) p.set('q', f.q);
      if (cursorNow) p.set('cursor', cursorNow);
      let r;
      try { r = await apiGet('/v1/runs?' + p); } catch (e) { if (gen === viewGen) showError(e); return; }
      if (gen !== viewGen) return;
      next = r.data.next_cursor || null;
      newer.disabled = cursorStack.length === 0 && !cursorNow;
      older.disabled = !next;
      pageInfo.textContent = 'Page ' + (cursorStack.length + 1);
      if (r.data === shown) return;
      shown = r.data;
      say('');
      const runs = r.data.runs || [];
      tbody.replaceChildren();
      if (!runs.length) tbody.append(h('tr', null, h('td', { colspan: 7, class: 'muted', text: 'No runs match.' })));
      for (const run of runs) {
        const params = run.params && Object.keys(run.params).length ? JSON.stringify(run.params) : '';
        const why = run.root_cause ? rootCause(run.root_cause) : run.error ? h('span', { text: run.error }) : '';
        tbody.append(h('tr', { 'data-run': run.id, 'data-state': run.state, 'data-recovered': run.recovered ? '1' : null },
          h('td', { class: 'mono' }, h('a', { href: '#/runs/' + encodeURIComponent(run.id), text: run.id })),
          h('td', { text: run.workflow }), h('td', null, runBadges(run)), h('td', null, timeEl(run.created_at)),
          h('td', { class: 'num', title: run.finished_at ? 'until ' + fmtTime(run.finished_at) : 'so far' },
            run.duration_ms !== undefined ? fmtDur(run.duration_ms) : '—'),
          h('td', { class: 'mono params', title: params, text: params }), h('td', { class: 'err' }, why)));
      }
    }
    refresh();
    setPoll(refresh);
  }

  /* ---------- Run page ---------- */
  function runPage(id) {
    const gen = viewGen;
    document.title = 'Run ' + id + ' · Sluice';
    const head = h('div'), actions = h('div', { class: 'actions', id: 'actions' }), notes = h('div');
    const dag = h('section', { 'aria-labelledby': 'dag-h' }), steps = h('section', { 'aria-labelledby': 'steps-h' });
    const gantt = h('section', { 'aria-labelledby': 'gantt-h' }), notifs = h('section', { 'aria-labelledby': 'notify-h' });
    main.append(h('h1', null, 'Run ', h('span', { class: 'mono', text: id })), head, actions, notes, dag, steps, notifs, gantt);
    let run = null, graph = null, graphFor = null, confirming = false;
    async function loadGraph(name) {
      if (graphFor === name) return;
      graphFor = name;
      try { graph = (await apiGet('/v1/workflows/' + encodeURIComponent(name))).data.workflow; } catch (e) { graph = null; }
    }
    function paintActions() {
      actions.replaceChildren();
      if (!run) return;
      const live = !TERMINAL[run.state];
      const can = authOK;
      if (live && !confirming) {
        actions.append(h('button', { type: 'button', id: 'cancel', class: 'danger', text: 'Cancel run', disabled: !can || null,
          onclick: () => { confirming = true; paintActions(); document.getElementById('cancel-confirm').focus(); } }));
      } else if (live) {
        actions.append(h('button', { type: 'button', id: 'cancel-confirm', class: 'danger', text: 'Yes, cancel this run',
          onclick: () => act(':cancel', 'Cancel requested.') }),
        h('button', { type: 'button', id: 'cancel-keep', text: 'Keep it running',
          onclick: () => { confirming = false; paintActions(); document.getElementById('cancel').focus(); } }));
      }
      if (run.state === 'failed' || run.state === 'cancelled')
        actions.append(h('button', { type: 'button', id: 'redrive', class: 'primary', disabled: !can || null,
          text: 'Redrive (re-run failed and cancelled steps)', onclick: () => act(':redrive', 'Redrive started.') }));
      if (!can) actions.append(h('span', { class: 'muted', text: 'Actions need the operator token (or the proxy\'s sign-in).' }));
    }
    async function act(what, done) {
      confirming = false;
      for (const b of actions.querySelectorAll('button')) b.disabled = true;
      try {
        await apiPost('/v1/runs/' + encodeURIComponent(id) + what, {});
        say(done);
        etags.delete('/v1/runs/' + encodeURIComponent(id));
        await refresh();
      } catch (e) { showError(e); paintActions(); }
    }
    function paintHead() {
      const p = run.params && Object.keys(run.params).length ? JSON.stringify(run.params) : '—';
      head.replaceChildren(h('dl', { class: 'meta', id: 'run-meta', 'data-state': run.state },
        h('dt', { text: 'State' }), h('dd', null, runBadges(run)),
        h('dt', { text: 'Workflow' }), h('dd', null, h('a', { href: '#/workflows/' + encodeURIComponent(run.workflow), text: run.workflow }),
          ' ', h('span', { class: 'mono muted', title: run.version, text: '@' + run.version.slice(0, 12) })),
        h('dt', { text: 'Params' }), h('dd', { class: 'mono', text: p }),
        h('dt', { text: 'Origin' }), h('dd', { text: run.origin || '—' }),
        run.logical_time ? h('dt', { text: 'Logical time' }) : null,
        run.logical_time ? h('dd', { id: 'run-logical' }, timeEl(run.logical_time),
          run.interval ? [' (interval ', timeEl(run.interval.start), ' – ', timeEl(run.interval.end), ')'] : null) : null,
        h('dt', { text: 'Created' }), h('dd', null, timeEl(run.created_at)),
        h('dt', { text: 'Finished' }), h('dd', null, timeEl(run.finished_at)),
        h('dt', { text: 'Duration' }), h('dd', { text: run.duration_ms !== undefined ? fmtDur(run.duration_ms) : '—' }),
        run.error ? h('dt', { text: 'Error' }) : null, run.error ? h('dd', { class: 'err', text: run.error }) : null));
      /* root cause first: the step that failed first, not a later consequence ("join step X can never start") */
      if (run.root_cause && run.state !== 'succeeded')
        head.prepend(h('div', { class: 'note bad headline', role: 'note' }, h('strong', { text: 'Failed first: ' }), rootCause(run.root_cause, 'root-cause')));
      notes.replaceChildren();
      if (run.recovered && run.recovered.length) {
        notes.append(h('div', { class: 'note', id: 'recovered', role: 'note' },
          h('strong', { text: 'Recovered: ' }),
          'the run succeeded because on_failure handled ' + (run.recovered.length > 1 ? 'these failures' : 'a failure') + ': ',
          run.recovered.map((x, i) => [i ? '; ' : '', h('span', { class: 'mono', text: x.step }), ' — ', x.error || '?'])));
      }
    }
    function paintDag() {
      dag.replaceChildren(h('h2', { id: 'dag-h', text: 'Graph' }));
      if (!graph) { dag.append(h('p', { class: 'muted', text: 'The workflow ' + run.workflow + ' is not loaded: no graph to draw.' })); return; }
      const states = {};
      for (const st of run.steps || []) states[st.name] = st.state;
      if (graph.version !== run.version)
        dag.append(h('p', { class: 'muted', text: 'Drawn from the loaded version ' + graph.version.slice(0, 12) + '; this run uses ' + run.version.slice(0, 12) + '.' }));
      dag.append(dagSvg(graph.graph, states, 'Graph of run ' + id + ', coloured by step state'), legend());
    }
    function jobLink(x) {
      return x.job_id && x.project && x.region
        ? h('a', { href: consoleUrl(x), target: '_blank', rel: 'noopener', class: 'mono', text: x.job_id, 'aria-label': 'Dataflow job ' + x.job_id + ' in the Cloud console' })
        : x.job_id ? h('span', { class: 'mono', text: x.job_id }) : '—';
    }
    function errorBlock(x) {
      const err = [];
      if (x.error) err.push(h('div', { text: x.error }));
      if (x.failure_cause) err.push(h('div', { class: 'cause' }, h('strong', { text: 'Cause: ' }), x.failure_cause));
      return err;
    }
    const COLS = 8;
    const expanded = new Set(); /* steps whose attempts are shown; kept across redraws */
    /* One row per step (its current attempt); its error and cause on a full-width row below it, so no column is
     * pushed past the right edge; with more than one attempt, a button shows a row per attempt. */
    function paintSteps() {
      const tbody = h('tbody');
      for (const st of run.steps || []) {
        const atts = st.attempts || [];
        const sid = 'att-' + st.name.replace(/[^A-Za-z0-9_-]/g, '_');
        let attCell = String(st.attempt);
        if (atts.length > 1) {
          const open = expanded.has(st.name);
          attCell = h('button', { type: 'button', class: 'attempts-toggle', 'aria-expanded': open ? 'true' : 'false',
            'aria-controls': atts.map((a) => sid + '-' + a.attempt).join(' '),
            text: (open ? '▾ ' : '▸ ') + atts.length + ' attempts',
            onclick: () => { if (expanded.has(st.name)) expanded.delete(st.name); else expanded.add(st.name); paintSteps();
              const b = document.querySelector('#steps tr[data-step="' + CSS.escape(st.name) + '"] .attempts-toggle'); if (b) b.focus(); } });
        }
        tbody.append(h('tr', { 'data-step': st.name, 'data-state': st.state, 'data-attempt': st.attempt },
          h('th', { scope: 'row', text: st.name }), h('td', null, badge(st.state)), h('td', { class: 'attempt' }, attCell),
          h('td', null, st.job_name || st.job_id ? [h('div', { class: 'mono', text: st.job_name || '—' }), h('div', null, jobLink(st)),
            st.job_state ? h('div', { class: 'mono muted', text: st.job_state }) : null] : '—'),
          h('td', null, timeEl(st.started_at)), h('td', null, timeEl(runningAt(st))), h('td', null, timeEl(st.finished_at)),
          h('td', { class: 'num' }, st.started_at && st.finished_at ? fmtDur(Date.parse(st.finished_at) - Date.parse(st.started_at)) : '—')));
        const err = errorBlock(st);
        if (err.length) tbody.append(h('tr', { class: 'step-error', 'data-error-of': st.name },
          h('td', { colspan: COLS, class: 'err' }, h('div', { class: 'err-inner' }, err))));
        if (atts.length > 1) {
          atts.forEach((a) => {
            const e = errorBlock(a);
            tbody.append(h('tr', { class: 'attempt-row', id: sid + '-' + a.attempt, hidden: !expanded.has(st.name) || null,
              'data-step': st.name, 'data-attempt': a.attempt, 'data-state': a.state, 'data-job-id': a.job_id || null },
              h('td', { class: 'muted', text: '↳ ' + st.name }), h('td', null, badge(a.state)), h('td', { text: '#' + a.attempt }),
              h('td', null, h('div', { class: 'mono', text: a.job_name || '—' }), h('div', null, jobLink(Object.assign({ project: st.project, region: st.region }, a))),
                a.job_state ? h('div', { class: 'mono muted', text: a.job_state }) : null, e.length ? h('div', { class: 'err' }, e) : null),
              h('td', null, timeEl(a.launched_at)), h('td', null, timeEl(a.running_at)), h('td', null, timeEl(a.ended_at)),
              h('td', { class: 'num' }, a.launched_at && a.ended_at ? fmtDur(Date.parse(a.ended_at) - Date.parse(a.launched_at)) : '—')));
          });
        }
      }
      steps.replaceChildren(h('h2', { id: 'steps-h', text: 'Steps' }), h('div', { class: 'table-wrap' }, h('table', { id: 'steps' },
        h('thead', null, h('tr', null, ['Step', 'State', 'Attempt', 'Job', 'Launched', 'Running', 'Ended', 'Duration']
          .map((x) => h('th', { scope: 'col', text: x })))), tbody)));
    }
    /* The run's events per sink (GET /v1/runs/{id} `notifications`): delivered, retrying or given up. Hidden when no
     * sink took any of its events. */
    function paintNotifications() {
      const list = run.notifications || [];
      notifs.replaceChildren();
      if (!list.length) return;
      const label = { pending: 'pending', retrying: 'retrying', delivered: 'delivered', given_up: 'given up' };
      const tbody = h('tbody');
      for (const n of list) {
        const detail = n.state === 'delivered' ? timeEl(n.delivered_at)
          : [n.last_error ? h('div', { text: n.last_error }) : null,
             n.state !== 'given_up' && n.next_attempt_at ? h('div', { class: 'muted' }, 'next attempt ', timeEl(n.next_attempt_at)) : null];
        tbody.append(h('tr', { 'data-event': n.id, 'data-sink': n.sink, 'data-state': n.state },
          h('th', { scope: 'row' }, h('span', { text: n.sink }), ' ', h('span', { class: 'mono', text: n.target || '' })),
          h('td', { class: 'mono', text: n.type }), h('td', null, h('span', { class: 'badge s-n-' + n.state, text: label[n.state] || n.state })),
          h('td', { text: String(n.attempts) }), h('td', { class: 'err' }, detail)));
      }
      notifs.append(h('h2', { id: 'notify-h', text: 'Notifications' }), h('div', { class: 'table-wrap' }, h('table', { id: 'notifications' },
        h('thead', null, h('tr', null, ['Sink', 'Event', 'State', 'Attempts', 'Delivered / last error'].map((x) => h('th', { scope: 'col', text: x })))),
        tbody)));
    }
    /* When Sluice first saw the job running (a check); null when it never did. */
    function runningAt(st) { return st.running_at || null; }
    function paintGantt() {
      gantt.replaceChildren(h('h2', { id: 'gantt-h', text: 'Timeline' }));
      const stepsL = (run.steps || []).slice();
      if (!stepsL.length) return;
      const t0 = Date.parse(run.created_at);
      const now = Math.max(Date.now(), ...stepsL.map((x) => Date.parse(x.updated_at || x.started_at || run.created_at) || 0));
      const tEnd = run.finished_at ? Date.parse(run.finished_at) : now;
      const byName = {};
      for (const st of stepsL) byName[st.name] = st;
      const edges = graph ? graph.graph.edges : [];
      const rows = stepsL.map((st) => {
        let ready = t0;
        for (const e of edges) {
          if (e.to !== st.name || !byName[e.from] || !byName[e.from].finished_at) continue;
          const pf = byName[e.from];
          if ((e.kind === 'on_failure') !== (pf.state === 'failed')) continue;
          ready = Math.max(ready, Date.parse(pf.finished_at));
        }
        const started = st.started_at ? Date.parse(st.started_at) : null;
        const ended = st.finished_at ? Date.parse(st.finished_at) : null;
        const active = !TERMINAL[st.state] && st.state !== 'skipped';
        /* pending: from when its predecessors were done until the job ran (seen running) or, if never seen
         * running, until the launch; running: from then to the end (or now while it is in flight) */
        /* a hook has no launch: a mark at its end */
        const atts = st.attempts || [];
        if (atts.length) {
          /* one pending and one running segment per attempt: an attempt's pending time starts where the previous
           * attempt ended (the retry's backoff) and lasts through its launch until its job was seen running */
          const segs = [];
          let from = ready;
          atts.forEach((a, i) => {
            const launch = a.launched_at ? Date.parse(a.launched_at) : from;
            const run0 = a.running_at ? Date.parse(a.running_at) : launch;
            const last = i === atts.length - 1;
            const end = a.ended_at ? Date.parse(a.ended_at) : last && active ? tEnd : run0;
            if (run0 > from) segs.push({ kind: 'pending', from, to: run0, a });
            segs.push({ kind: 'running', from: run0, to: Math.max(end, run0), a });
            from = Math.max(end, run0);
          });
          return { st, segs, first: segs.length ? segs[0].from : ready };
        }
        const running = st.running_at ? Date.parse(st.running_at) : started || (!active && ended ? ended : null);
        const pendEnd = running || (active ? tEnd : ended || ready);
        const r0 = Math.min(ready, pendEnd), segs = [];
        if (pendEnd > r0) segs.push({ kind: 'pending', from: r0, to: pendEnd, a: null });
        if (running) segs.push({ kind: 'running', from: running, to: ended || (active ? tEnd : running), a: null });
        return { st, segs, first: running || r0 };
      }).sort((a, b) => a.first - b.first);
      const span = Math.max(tEnd - t0, 1000);
      const avail = (gantt.clientWidth || main.clientWidth || 900) - 16;
      const labelW = avail < 500 ? 92 : 150, W = Math.max(300, Math.min(1300, avail)), plotW = W - labelW - 16;
      const rowH = 26, top = 24, H = top + rows.length * rowH + 8;
      const x = (t) => labelW + ((t - t0) / span) * plotW;
      const svg = s('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-labelledby': 'gantt-t', id: 'gantt' });
      svg.append(s('title', { id: 'gantt-t' }, 'Timeline of the steps of run ' + id + ': grey pending, coloured running until the end'));
      for (let i = 0; i <= 4; i++) {
        const t = t0 + (span * i) / 4, xx = x(t);
        svg.append(s('line', { class: 'axis', x1: xx, y1: 16, x2: xx, y2: H - 4 }));
        svg.append(s('text', { x: xx, y: 12, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle' }, '+' + fmtDur(t - t0)));
      }
      rows.forEach((r, i) => {
        const y = top + i * rowH;
        const g = s('g', { 'data-step': r.st.name, class: 'gantt-row' });
        const maxc = labelW < 100 ? 11 : 20;
        g.append(s('text', { x: 4, y: y + 16 }, r.st.name.length > maxc ? r.st.name.slice(0, maxc - 1) + '…' : r.st.name));
        for (const sg of r.segs) {
          const an = sg.a ? ' attempt ' + sg.a.attempt : '';
          if (sg.kind === 'pending') {
            const seg = s('rect', { class: 'seg-pending', x: x(sg.from), y: y + 5, width: Math.max(1, x(sg.to) - x(sg.from)), height: 14,
              'data-seg': 'pending', 'data-attempt': sg.a ? sg.a.attempt : null });
            seg.append(s('title', null, r.st.name + an + (sg.a && sg.a.attempt > 1 ? ' backoff, launch and start ' : ' pending ') + fmtDur(sg.to - sg.from)));
            g.append(seg);
          } else {
            const state = sg.a ? sg.a.state : r.st.state;
            const cls = state === 'launching' || state === 'running' ? 'running' : state;
            const seg = s('rect', { class: 'seg-' + cls, x: x(sg.from), y: y + 3, width: Math.max(2, x(sg.to) - x(sg.from)), height: 18,
              'data-seg': 'running', 'data-attempt': sg.a ? sg.a.attempt : null });
            seg.append(s('title', null, r.st.name + an + ' ' + state + ' ' + fmtDur(sg.to - sg.from) + (sg.a && sg.a.job_id ? ' (job ' + sg.a.job_id + ')' : '')));
            g.append(seg);
          }
        }
        svg.append(g);
      });
      gantt.append(h('div', { class: 'gantt' }, svg),
        h('p', { class: 'legend' }, h('span', { text: 'one bar per attempt' }),
          h('span', { text: 'grey: pending (waiting for predecessors, a retry\'s backoff, the launch and the job\'s start)' }),
          h('span', { text: 'blue: launched and running' }), h('span', { text: 'green / red / amber: ended succeeded / failed / cancelled' })));
    }
    async function refresh() {
      let r;
      try { r = await apiGet('/v1/runs/' + encodeURIComponent(id)); } catch (e) { if (gen === viewGen) showError(e); return; }
      if (gen !== viewGen) return;
      if (r.data.run !== run) {
        run = r.data.run;
        await loadGraph(run.workflow);
        if (gen !== viewGen) return;
        paintHead();
        paintActions();
        paintDag();
        paintSteps();
        paintNotifications();
      }
      paintGantt(); /* a run in progress: the bars grow with the clock */
      if (TERMINAL[run.state] && r.changed === false) setPoll(refresh, 10000);
    }
    onResize = () => { if (run) paintGantt(); };
    refresh();
    setPoll(refresh);
  }

  paintAuth();
  route();
})();
