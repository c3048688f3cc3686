// titanic dashboard: polls the JSON API (../api/v1) and renders it.
// Plain JavaScript, no dependencies. Data is only ever put in the page
// with textContent, never as HTML.
'use strict';

(function () {
  const REFRESH_MS = 1500;
  const TICKETS = 50;
  const STATES = ['all', 'pending', 'dispatched', 'done', 'failed', 'cancelled'];
  const DEAD = 50; // dead letters listed
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
    // Writes go as JSON: the server refuses other content types, which is
    // what keeps cross-site forms from driving it.
    if (opts && opts.method && opts.method !== 'GET') headers['Content-Type'] = 'application/json';
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

  // post calls a state-changing endpoint, then refreshes the page.
  async function post(path, body) {
    try {
      await api(path, { method: 'POST', body: JSON.stringify(body || {}) });
      showError(null);
    } catch (e) {
      if (!(e instanceof AuthError)) showError(e);
    }
    refresh();
  }

  function button(label, props, onclick) {
    return el('button', Object.assign({ type: 'button', onclick }, props || {}), label);
  }

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

  // renderServices shows the services the API lists (the ones with the
  // most tickets) and, when it left some out, their sum in a last row
  // without buttons: it is no service of its own.
  function renderServices(list, other, omitted) {
    counts = { all: 0, pending: 0, dispatched: 0, done: 0, failed: 0, cancelled: 0 };
    const most = Math.max(1, ...list.map((s) => s.pending));
    const rows = list.map((s) => {
      for (const k of STATES.slice(1)) { counts[k] += s[k] || 0; counts.all += s[k] || 0; }
      const bar = el('span', { class: 'bar' });
      bar.style.width = Math.round((100 * s.pending) / most) + '%';
      return el('tr', null,
        td(s.name, 'mono strong'),
        el('td', { class: 'num depth' }, bar, el('span', null, s.pending)),
        td(s.dispatched, 'num'), td(s.done, 'num'), td(s.failed, 'num' + (s.failed ? ' warn' : '')),
        td(s.oldest ? duration(s.oldest_age_seconds) : '—', 'num'),
        td(s.workers, 'num' + (s.workers === 0 && s.pending > 0 ? ' warn' : '')), td(s.idle, 'num'), td(s.busy, 'num'),
        el('td', { class: 'actions-cell' },
          s.paused ? el('span', { class: 'pill paused' }, 'paused') : null,
          s.paused
            ? button('Resume', { class: 'small', 'data-service': s.name }, () => post('services/' + encodeURIComponent(s.name) + '/resume'))
            : button('Pause', { class: 'small', 'data-service': s.name }, () => post('services/' + encodeURIComponent(s.name) + '/pause')),
          s.failed ? button('Retry failed', { class: 'small', 'data-service': s.name }, () => post('services/' + encodeURIComponent(s.name) + '/retry-failed')) : null,
          s.failed ? button('Purge failed', { class: 'small danger', 'data-service': s.name }, () => {
            if (confirm('Delete the ' + s.failed + ' failed tickets of ' + s.name + '?')) post('services/' + encodeURIComponent(s.name) + '/purge');
          }) : null));
    });
    if (other && omitted > 0) {
      for (const k of STATES.slice(1)) { counts[k] += other[k] || 0; counts.all += other[k] || 0; }
      rows.push(el('tr', { class: 'other' },
        td(omitted.toLocaleString('en') + ' more services', 'strong'),
        td(other.pending, 'num'), td(other.dispatched, 'num'), td(other.done, 'num'), td(other.failed, 'num'),
        td(other.oldest ? duration(other.oldest_age_seconds) : '—', 'num'),
        td(other.workers, 'num'), td(other.idle, 'num'), td(other.busy, 'num'), td('')));
    }
    fill($('services').tBodies[0], rows, 10, 'no services yet');
    renderTabs();
  }

  function renderTabs() {
    $('tabs').replaceChildren(...STATES.map((s) => el('button', {
      type: 'button', class: 'tab' + (s === tab ? ' current' : ''),
      onclick: () => { tab = s; renderTabs(); refresh(); },
    }, s, counts[s] !== undefined ? el('span', { class: 'count' }, counts[s]) : null)));
  }

  // renderDead lists the dead set (failed tickets), grouped by service.
  function renderDead(page) {
    const rows = [];
    let service = null;
    for (const t of page.tickets.slice().sort((a, b) => a.service.localeCompare(b.service))) {
      if (t.service !== service) {
        service = t.service;
        rows.push(el('tr', { class: 'group' }, el('td', { colspan: 5, class: 'mono strong' }, service)));
      }
      rows.push(el('tr', {
        class: 'click' + (t.id === selected ? ' selected' : ''),
        onclick: () => { selected = t.id; showDetail(); refresh(); },
      }, td(t.id, 'mono ticket'), td(t.attempts, 'num'), el('td', { title: t.updated }, age(t.updated)), td(t.reason, 'reason'),
      el('td', null, button('Retry', { class: 'small' }, (ev) => { ev.stopPropagation(); post('tickets/' + t.id + '/retry'); }))));
    }
    fill($('dead').tBodies[0], rows, 5, 'no failed tickets');
    $('dead-more').hidden = !page.next;
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

  // frameView shows a frame as text, or by its size when it is binary.
  function frameView(b64) {
    const d = decodeFrame(b64);
    if (!d.base64) return el('pre', null, d.text);
    return el('span', { class: 'muted' }, atob(b64).length + ' bytes (binary)');
  }

  function renderAttempts(list) {
    if (!list.length) return el('p', { class: 'muted' }, 'no failed attempts');
    return el('table', { id: 'attempts', class: 'attempts' },
      el('thead', null, el('tr', null, ...['#', 'started', 'worker', 'took', 'outcome', 'error'].map((h) => el('th', null, h)))),
      el('tbody', null, ...list.map((a, i) => el('tr', null,
        td(i + 1, 'num'), el('td', { title: a.start }, new Date(a.start).toLocaleString('en-GB')), td(a.worker || '—', 'mono'),
        td(a.seconds < 1 ? Math.round(a.seconds * 1000) + ' ms' : a.seconds.toFixed(1) + ' s', 'num'),
        el('td', null, pill(a.outcome)), td(a.error || '', 'reason')))));
  }

  let detailKey = '';

  async function showDetail() {
    const box = $('detail');
    if (!selected) { box.hidden = true; detailKey = ''; return; }
    let t;
    let attempts = null;
    try {
      t = await api('tickets/' + selected + '?body=1');
      try { attempts = (await api('tickets/' + selected + '/attempts')).attempts; } catch (e) { attempts = null; }
      if (t.state === 'done' && attempts && !attempts.length) attempts = null; // nothing to tell
    } catch (e) {
      if (!(e instanceof AuthError)) box.replaceChildren(el('p', { class: 'error' }, String(e.message)));
      detailKey = '';
      return;
    }
    // Redraw only on change: the page refreshes every REFRESH_MS, and a
    // redraw would drop the reader's text selection and move the buttons.
    const key = JSON.stringify([t, attempts]);
    if (key === detailKey && !box.hidden) return;
    detailKey = key;
    const rows = [
      ['ticket', t.id], ['service', t.service], ['state', pill(t.state)], ['attempts', t.attempts],
      ['created', t.created], ['updated', t.updated],
    ];
    if (t.priority && t.priority !== 'normal') rows.push(['priority', t.priority]);
    if (t.due) rows.push(['due', t.due]);
    if (t.deadline) rows.push(['deadline', t.deadline]);
    if (t.max_attempts) rows.push(['max attempts', t.max_attempts]);
    if (t.worker) rows.push(['last worker', t.worker]);
    if (t.reason) rows.push(['reason', t.reason]);
    if (t.body_omitted) rows.push(['request', t.body_bytes + ' bytes (too large to show)']);
    else if (t.body) {
      t.body.forEach((f, i) => rows.push([t.body.length > 1 ? 'request[' + i + ']' : 'request', frameView(f)]));
    }
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
    const retry = t.state === 'failed' || t.state === 'cancelled'
      ? button('Retry', { id: 'retry', class: 'primary' }, () => post('tickets/' + t.id + '/retry')) : null;
    const cancel = t.state === 'pending' || t.state === 'dispatched'
      ? button('Cancel', { id: 'cancel' }, () => {
        if (confirm('Cancel ticket ' + t.id + '?')) post('tickets/' + t.id + '/cancel');
      }) : null;
    box.replaceChildren(...[
      el('dl', null, ...rows.flatMap(([k, v]) => [el('dt', null, k), el('dd', null, v)])),
      attempts ? el('h3', null, 'Attempt history') : null,
      attempts ? renderAttempts(attempts) : null,
      el('div', { class: 'actions' }, retry, cancel, close, hide)].filter((c) => c));
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
    const [cluster, stats, services, tickets, clients, dead] = await Promise.allSettled([
      api('cluster'), api('stats'), api('services'), api(q), api('clients'), api('dead?order=newest&limit=' + DEAD),
    ]);
    if (gen !== generation) return; // a newer refresh (tab click) is under way
    let failure = null;
    const use = (res, fn) => {
      if (res.status === 'fulfilled') fn(res.value);
      else if (!(res.reason instanceof AuthError)) failure = failure || res.reason;
    };
    use(cluster, renderCluster);
    use(stats, renderStats);
    use(services, (v) => renderServices(v.services, v.other, v.omitted));
    use(tickets, renderTickets);
    use(clients, renderClients);
    use(dead, renderDead);
    const ok = [cluster, stats, services, tickets, clients, dead].every((r) => r.status === 'fulfilled');
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
