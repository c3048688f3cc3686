// titanic dashboard: polls the JSON API (../api/v1) and renders it.
// Plain JavaScript, no dependencies. Data is only ever put in the page
// with textContent, never as HTML.
'use strict';

(function () {
  const REFRESH_MS = 1500;
  const TICKETS = 50;
  const STATES = ['all', 'pending', 'dispatched', 'done', 'failed'];
  const TOKEN_KEY = 'titanic-token';

  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let tab = 'all';
  let selected = '';
  let timer = 0;
  let lastOK = '';
  let generation = 0; // answers of an older refresh are dropped

  // The URL fragment, which browsers never send to the server, may carry
  // a token (#token=...; it is then removed from the URL) and a ticket to
  // open (#ticket=ID, a link to give to someone).
  {
    const hash = new URLSearchParams(location.hash.slice(1));
    if (hash.has('token')) {
      token = hash.get('token');
      sessionStorage.setItem(TOKEN_KEY, token);
      hash.delete('token');
      const rest = hash.toString();
      history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : ''));
    }
    if (/^[0-9a-fA-F-]{32,36}$/.test(hash.get('ticket') || '')) selected = hash.get('ticket');
  }

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'title') e.title = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  class AuthError extends Error {}

  async function api(path, opts) {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    const r = await fetch('api/v1/' + path, Object.assign({ headers, cache: 'no-store' }, opts || {}));
    if (r.status === 401) {
      $('auth').hidden = false;
      throw new AuthError('token required');
    }
    let body = {};
    try { body = await r.json(); } catch (e) { /* not JSON */ }
    if (!r.ok) throw new Error(body.error || (r.status + ' ' + r.statusText));
    return body;
  }

  function age(iso) {
    if (!iso) return '';
    let s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    return duration(s) + ' ago';
  }

  function duration(s) {
    if (s < 1) return '<1s';
    if (s < 60) return Math.floor(s) + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + Math.floor(s % 60) + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
    return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
  }

  function fill(tbody, rows, cols, empty) {
    tbody.replaceChildren(...(rows.length ? rows : [el('tr', { class: 'empty' }, el('td', { colspan: cols }, empty))]));
  }

  function td(v, cls) { return el('td', cls ? { class: cls } : null, v); }

  function pill(state) { return el('span', { class: 'pill ' + state }, state); }

  function renderCluster(c) {
    const role = $('role');
    role.textContent = c.active ? c.role + ' · serving' : c.role + ' · not serving';
    role.className = 'badge ' + (c.active ? 'on' : 'off');
    const facts = [['mode', c.mode]];
    if (c.node_id) facts.push(['node', c.node_id]);
    if (c.mode !== 'single') {
      facts.push(['leader', c.leader || '—'], ['term', c.term], ['commit', c.commit_index], ['applied', c.applied_index], ['lag', c.commit_lag]);
    }
    if (c.version) facts.push(['version', c.version]);
    $('node').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', null, k), el('dd', null, v)]));
    fill($('members').tBodies[0], c.members.map((m) => el('tr', null,
      td(m.id, 'mono'), td(m.addr, 'mono'),
      td((m.leader ? 'leader' : 'follower') + (m.voter ? '' : ' (non-voter)'), m.leader ? 'lead' : ''))),
    3, c.mode === 'single' ? 'single node: no replication' : 'no members');
    fill($('peers').tBodies[0], c.peers.map((p) => el('tr', null, td(p.name), td(p.addr, 'mono'), td(p.capacity, 'num'))),
      3, 'no peers (peering not enabled)');
  }

  const CARDS = [
    ['submits', 'submits'], ['replies', 'replies'], ['dispatches', 'dispatches'], ['redeliveries', 'redeliveries'],
    ['failures', 'failures'], ['leased', 'leased now'], ['commits', 'commits'], ['busy', 'busy refusals'],
  ];

  function renderStats(st) {
    $('counters').replaceChildren(...CARDS.map(([k, label]) =>
      el('div', { class: 'card' + (k === 'failures' && st[k] > 0 ? ' bad' : '') },
        el('div', { class: 'value' }, Number(st[k] || 0).toLocaleString('en')), el('div', { class: 'label' }, label))));
  }

  let counts = {};

  function renderServices(list) {
    counts = { all: 0, pending: 0, dispatched: 0, done: 0, failed: 0 };
    const most = Math.max(1, ...list.map((s) => s.pending));
    fill($('services').tBodies[0], list.map((s) => {
      for (const k of STATES.slice(1)) { counts[k] += s[k]; counts.all += s[k]; }
      const bar = el('span', { class: 'bar' });
      bar.style.width = Math.round((100 * s.pending) / most) + '%';
      return el('tr', null,
        td(s.name, 'mono strong'),
        el('td', { class: 'num depth' }, bar, el('span', null, s.pending)),
        td(s.dispatched, 'num'), td(s.done, 'num'), td(s.failed, 'num' + (s.failed ? ' warn' : '')),
        td(s.oldest ? duration(s.oldest_age_seconds) : '—', 'num'),
        td(s.workers, 'num' + (s.workers === 0 && s.pending > 0 ? ' warn' : '')), td(s.idle, 'num'), td(s.busy, 'num'));
    }), 9, 'no services yet');
    renderTabs();
  }

  function renderTabs() {
    $('tabs').replaceChildren(...STATES.map((s) => el('button', {
      type: 'button', class: 'tab' + (s === tab ? ' current' : ''),
      onclick: () => { tab = s; renderTabs(); refresh(); },
    }, s, counts[s] !== undefined ? el('span', { class: 'count' }, counts[s]) : null)));
  }

  function renderTickets(page) {
    fill($('tickets').tBodies[0], page.tickets.map((t) => el('tr', {
      class: 'click' + (t.id === selected ? ' selected' : ''),
      onclick: () => { selected = t.id; showDetail(); refresh(); },
    },
    td(t.id, 'mono ticket'), td(t.service, 'mono'), el('td', null, pill(t.state)), td(t.attempts, 'num'),
    el('td', { title: t.created }, age(t.created)), el('td', { title: t.updated }, age(t.updated)), td(t.reason, 'reason'))),
    7, tab === 'all' ? 'no tickets' : 'no ' + tab + ' tickets');
  }

  const CLIENT_ROWS = 10;

  function renderClients(v) {
    fill($('clients').tBodies[0], v.clients.slice(0, CLIENT_ROWS).map((c) => el('tr', null,
      td(c.id, 'mono'), el('td', { title: c.since }, age(c.since)), el('td', { title: c.seen }, age(c.seen)))),
    3, v.tracked ? 'no clients connected' : 'not tracked on this node');
    const more = $('clients-more');
    more.hidden = v.total <= CLIENT_ROWS;
    more.textContent = v.total + ' connected in all';
  }

  function decodeFrame(b64) {
    const bin = atob(b64);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    try {
      return { text: new TextDecoder('utf-8', { fatal: true }).decode(bytes) };
    } catch (e) {
      return { text: b64, base64: true };
    }
  }

  async function showDetail() {
    const box = $('detail');
    if (!selected) { box.hidden = true; return; }
    let t;
    try {
      t = await api('tickets/' + selected);
    } catch (e) {
      if (!(e instanceof AuthError)) box.replaceChildren(el('p', { class: 'error' }, String(e.message)));
      return;
    }
    const rows = [
      ['ticket', t.id], ['service', t.service], ['state', pill(t.state)], ['attempts', t.attempts],
      ['created', t.created], ['updated', t.updated],
    ];
    if (t.reason) rows.push(['reason', t.reason]);
    if (t.reply_omitted) rows.push(['reply', t.reply_bytes + ' bytes (too large to show)']);
    else if (t.reply) {
      t.reply.forEach((f, i) => {
        const d = decodeFrame(f);
        rows.push(['reply[' + i + ']' + (d.base64 ? ' (base64)' : ''), el('pre', null, d.text)]);
      });
    }
    const close = el('button', {
      type: 'button', class: 'danger',
      onclick: async () => {
        if (!confirm('Close (delete) ticket ' + t.id + '?')) return;
        try {
          await api('tickets/' + t.id, { method: 'DELETE' });
          selected = '';
          box.hidden = true;
          refresh();
        } catch (e) { showError(e); }
      },
    }, 'Close ticket');
    const hide = el('button', { type: 'button', onclick: () => { selected = ''; box.hidden = true; refresh(); } }, 'Hide');
    box.replaceChildren(
      el('dl', null, ...rows.flatMap(([k, v]) => [el('dt', null, k), el('dd', null, v)])),
      el('div', { class: 'actions' }, close, hide));
    box.hidden = false;
  }

  function showError(e) {
    const box = $('error');
    if (!e) { box.hidden = true; return; }
    box.textContent = String(e.message || e);
    box.hidden = false;
  }

  async function refresh() {
    clearTimeout(timer);
    const gen = ++generation;
    const q = 'tickets?order=newest&limit=' + TICKETS + (tab === 'all' ? '' : '&state=' + tab);
    const [cluster, stats, services, tickets, clients] = await Promise.allSettled([
      api('cluster'), api('stats'), api('services'), api(q), api('clients'),
    ]);
    if (gen !== generation) return; // a newer refresh (tab click) is under way
    let failure = null;
    const use = (res, fn) => {
      if (res.status === 'fulfilled') fn(res.value);
      else if (!(res.reason instanceof AuthError)) failure = failure || res.reason;
    };
    use(cluster, renderCluster);
    use(stats, renderStats);
    use(services, (v) => renderServices(v.services));
    use(tickets, renderTickets);
    use(clients, renderClients);
    const ok = [cluster, stats, services, tickets, clients].every((r) => r.status === 'fulfilled');
    if (ok) $('auth').hidden = true;
    showError(failure);
    $('dot').className = 'dot ' + (ok ? 'on' : 'off');
    if (ok) lastOK = new Date().toLocaleTimeString('en-GB');
    $('updated').textContent = ok ? 'live · updated ' + lastOK : 'stale' + (lastOK ? ' since ' + lastOK : '');
    if (selected) showDetail();
    clearTimeout(timer);
    timer = setTimeout(refresh, REFRESH_MS);
  }

  $('auth').addEventListener('submit', (ev) => {
    ev.preventDefault();
    token = $('token').value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    refresh();
  });

  renderTabs();
  refresh();
})();
