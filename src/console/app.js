// idemgate approvers' console. A plain script: no dependency, no build step.
//
// Two rules hold everywhere below:
// - Server data is written as text (textContent, text nodes), never parsed as
//   HTML: exports are prepared by other people and may hold markup. The page's
//   Content-Security-Policy also requires Trusted Types with no policy, so an
//   HTML string cannot reach an HTML sink even by mistake.
// - Every action is one user intent with one Idempotency-Key: the key is made
//   when the action is opened, kept (in sessionStorage, so a reload keeps it too)
//   until the server gives a final answer, and reused by every retry of that
//   intent. The button is disabled while a request is in flight. A double click,
//   a reload or a dropped connection therefore cannot apply an action twice.
'use strict';

(() => {
  const TOKEN_SLOT = 'idemgate.console.token';
  const INTENT_SLOT = 'idemgate.console.intent:';
  const TIMEOUT_MS = 20000;
  const PAGE_SIZE = 50;
  // Cloudflare Access's logout, on the application's own host.
  const ACCESS_LOGOUT = '/cdn-cgi/access/logout';

  const $ = (id) => document.getElementById(id);
  // `opened`: which openExport call is the latest (an older one's answers,
  // arriving late, are dropped: the page never shows one export's detail after
  // another was asked for).
  const state = { token: null, me: null, exportId: null, exportRow: null, offset: 0, busy: false, opened: 0 };
  const forms = {};

  // ---- DOM helpers: text only --------------------------------------------

  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child ?? '')));
    }
    return node;
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  function say(node, text, kind) {
    node.textContent = text;
    node.className = kind || '';
    show(node, Boolean(text));
  }

  function sayLines(node, lines, kind) {
    node.replaceChildren(...lines.filter(Boolean).map((l, i) => el('span', i ? 'detail' : '', l)));
    node.className = kind || '';
    show(node, lines.some(Boolean));
  }

  // A word the browser could break inside (at a hyphen, a slash, …: an invoice
  // id, a date range, a file name), or one long enough to be an identifier.
  const BREAKABLE = /[^\p{L}\p{M}\p{N}.,:;'’_]/u;
  const LONG_WORD = 20;

  // `text` as el() children in which no word is broken mid-word: such words are
  // kept whole in a `.w` span (app.css: never wrapped inside; on a phone, wrapped
  // inside only when longer than the whole line). Spaces stay the break points.
  function words(text) {
    const out = [];
    for (const part of String(text ?? '').split(/(\s+)/)) {
      if (!part) continue;
      if (!/^\s/.test(part) && (BREAKABLE.test(part) || part.length >= LONG_WORD)) {
        out.push(el('span', 'w', part));
      } else if (typeof out[out.length - 1] === 'string') {
        out[out.length - 1] += part;
      } else {
        out.push(part);
      }
    }
    return out;
  }

  const time = (ms) => (typeof ms === 'number' ? new Date(ms).toISOString().slice(0, 19).replace('T', ' ') : '');
  const LOCAL_TIME = { day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' };

  // A time in the reader's own time zone and words, as a <time> element (its
  // datetime and title give the UTC instant); '' for no time.
  function when(ms) {
    if (typeof ms !== 'number') return '';
    const d = new Date(ms);
    const node = el('time', '', d.toLocaleString(undefined, LOCAL_TIME));
    node.dateTime = d.toISOString();
    node.title = `${time(ms)} UTC`;
    return node;
  }

  const compact = (v) => (v === undefined ? '—' : JSON.stringify(v));
  const label = (status) => String(status ?? '').replace(/_/g, ' ');
  // A stored name in words: `request_changes` → `Request changes`.
  const readable = (name) => {
    const s = label(name).trim();
    return s ? s[0].toUpperCase() + s.slice(1) : '';
  };
  const text = (v) => (typeof v === 'string' && v.trim() ? v.trim() : null);

  // Error and refusal messages belong to what they were about: they go when the
  // person moves on (another export, another action, a reload of the list,
  // signing in or out).
  function clearMessages() {
    say($('message'), '');
    say($('action-result'), '');
  }

  // ---- who is signed in -------------------------------------------------
  //
  // With a pasted token (local use, or any provider's token) the page sends it
  // as `Authorization: Bearer`. Without one — behind Cloudflare Access — it
  // sends no Authorization header and lets the browser send Access's cookie:
  // the edge then hands the Worker the person's token (Cf-Access-Jwt-Assertion).
  // Either way the server says who the person is (GET /v1/me: the subject,
  // tenant and roles as its claim settings read them), and the page shows and
  // decides its buttons by that answer, never by reading the token itself.

  // The person signed in (`state.me`) beside "Sign out", or the sign-in panel.
  function showSession() {
    const me = state.me;
    if (!me) {
      say($('whoami'), '');
    } else {
      const via = me.via === 'access' ? ' through Cloudflare Access' : '';
      const roles = me.roles.length ? ` · roles: ${me.roles.join(', ')}` : ' · no role';
      say($('whoami'), `Signed in as ${me.sub}${via} (tenant ${me.tenant})${roles}`);
    }
    show($('session'), Boolean(me));
    show($('token-panel'), !me);
    show($('main'), Boolean(me));
  }

  function signedOut() {
    state.token = null;
    state.me = null;
    showSession();
  }

  // Signs in with `token`, or with none (Access): asks the server who that is.
  // A refused token is said; no token refused is just the sign-in panel (not
  // behind Access). Answers whether someone is signed in.
  async function signIn(token) {
    state.token = token || null;
    state.me = null;
    const res = await api('GET', '/v1/me');
    const d = ok(res) && res.data && typeof res.data === 'object' ? res.data : null;
    if (d && typeof d.sub === 'string') {
      state.me = {
        sub: d.sub,
        tenant: typeof d.tenant === 'string' ? d.tenant : d.sub,
        roles: Array.isArray(d.roles) ? d.roles.filter((r) => typeof r === 'string') : [],
        via: d.via,
      };
      showSession();
      return true;
    }
    if (token) readFailed(res);
    else signedOut();
    return false;
  }

  // ---- the API -----------------------------------------------------------

  // One request to this Worker's own API (relative URL: same origin only).
  // Answers {status, data, replayed, retryAfter} or {network: true}.
  async function api(method, path, body, key) {
    const headers = state.token ? { authorization: `Bearer ${state.token}` } : {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (key) {
      headers['idempotency-key'] = key;
      // A retry that meets its own first attempt still running waits for its answer.
      headers.prefer = 'wait=5';
    }
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const resp = await fetch(path, {
        method, headers, body, cache: 'no-store', redirect: 'error', signal: abort.signal,
        // Behind Access (no token pasted) the edge needs Access's cookie.
        credentials: state.token ? 'omit' : 'same-origin',
      });
      const text = await resp.text();
      let data = null;
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
      const replayed = resp.headers.get('idempotent-replayed') === 'true' || resp.headers.get('x-idempotency-replay') === 'true';
      return { status: resp.status, data, replayed, retryAfter: resp.headers.get('retry-after') };
    } catch {
      return { network: true };
    } finally {
      clearTimeout(timer);
    }
  }

  const exportPath = (id, tail = '') => `/v1/staging/exports/${encodeURIComponent(id)}${tail}`;
  const ok = (res) => !res.network && res.status >= 200 && res.status < 300;

  function problemType(res) {
    const t = res.data && typeof res.data.type === 'string' ? res.data.type : '';
    return t.slice(t.lastIndexOf('/') + 1);
  }

  const VERBS = {
    approve: 'approved', reject: 'rejected', review: 'put under review', read: 'read',
    'request-changes': 'sent back to its preparer', check: 'checked', post: 'posted', rollback: 'rolled back',
  };
  // The actions offered under an export, in the order of their buttons.
  const ACTIONS = ['review', 'approve', 'reject', 'request-changes', 'post', 'rollback'];
  // Each action's method (the others are PUT) and the roles that may take it
  // (the server's command table; `review` needs none).
  const METHODS = { post: 'POST', rollback: 'POST' };
  const NEEDS = {
    approve: ['Approving', ['approver']],
    reject: ['Rejecting', ['approver']],
    'request-changes': ['Requesting changes', ['approver']],
    post: ['Posting', ['approver', 'poster']],
    rollback: ['Rolling back', ['approver']],
  };
  // The states an export waits for a decision in (the approval queue).
  const WAITING = ['prepared', 'under_review', 'awaiting_second_approval'];

  // What went wrong, in words: [sentence, details].
  function explain(action, res) {
    const again = 'Press the button again: the same request key is sent, so it cannot be applied twice.';
    if (res.network) {
      return ['No answer from the server (network error or timeout). It may or may not have been applied.', again];
    }
    const p = res.data && typeof res.data === 'object' ? res.data : {};
    const detail = typeof p.detail === 'string' ? p.detail : '';
    const server = detail ? `Server: ${detail} (HTTP ${res.status})` : `HTTP ${res.status}`;
    const type = problemType(res);
    const verb = VERBS[action] || action;
    switch (res.status) {
      case 401:
        return ['Your token was not accepted: it is expired, malformed or signed with another key. Paste a new token.', server];
      case 403:
        if (/segregation of duties/i.test(detail) && /first approval/i.test(detail)) {
          return ['You made the first approval of this export, so you cannot make the second: segregation of duties requires another approver.', server];
        }
        if (/segregation of duties/i.test(detail) && /poster/i.test(detail)) {
          return ['You prepared this export, so you cannot post it: segregation of duties requires someone else to post it.', server];
        }
        if (/segregation of duties/i.test(detail)) {
          return ['You prepared this export, so you cannot approve it: segregation of duties requires a different approver.', server];
        }
        if (/role/i.test(detail)) {
          return [`Your token lacks the role needed for this: it cannot be ${verb} by you.`, server];
        }
        return ['You are not allowed to do this.', server];
      case 404:
        return ['This export does not exist in your tenant (or no longer can be found).', server];
      case 409:
        if (type === 'idempotency-key-in-flight') {
          return ['This request is still being processed.', again];
        }
        if (type === 'invalid-transition') {
          const current = typeof p.current_state === 'string' ? label(p.current_state) : 'in another state';
          return [`This export is ${current}, so it cannot be ${verb} now.`, server];
        }
        return ['This conflicts with the export\'s current state.', server];
      case 413:
        return ['The data is too large to store.', server];
      case 422:
        if (type === 'quality-below-threshold') {
          return ['The data scores below the quality threshold, so it cannot be approved. Correct it or reject it.', server];
        }
        if (type === 'change-reason-required') {
          return ['You corrected the data: a change reason is required.', server];
        }
        if (type === 'second-approval-changes-data') {
          return ['A second approval confirms the data as first approved: it cannot correct it again. Request changes instead.', server];
        }
        if (type === 'idempotency-key-reused') {
          return ['This request key was already used for a different request. Close the form and open it again.', server];
        }
        return ['The request cannot be processed.', server];
      case 429:
        if (retryable(res)) return ['The server is busy. Wait a moment, then press the button again.', again];
        return ['The server is busy and refused the request.', server];
      case 400:
        if (action === 'check') return ['The approval would refuse this data as invalid.', server];
        return ['The request was refused as invalid.', server];
      default:
        if (res.status === 502 && type === 'delivery-failed') {
          const now = typeof p.current_state === 'string' ? ` The export is now ${label(p.current_state)}.` : '';
          return [`The accounting system did not take the file, so it was not posted.${now} Press Post again to retry.`, server];
        }
        if (res.status >= 500) {
          return ['The server could not complete the request; nothing was applied.', again];
        }
        return [`Unexpected answer from the server.`, server];
    }
  }

  function readFailed(res) {
    if (!res.network && res.status === 401) {
      sessionStorage.removeItem(TOKEN_SLOT);
      signedOut();
      showDetail(false);
      $('token-input').focus();
    }
    sayLines($('message'), explain('read', res), 'error');
  }

  // ---- intents: one key per user decision --------------------------------

  function freshKey(action) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return `console-${action}-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
  }

  // Intents are per person (the server scopes keys by tenant and subject too): a
  // fresh token for the same person keeps them, another person's never sees them.
  function who() {
    const me = state.me || { tenant: '', sub: '' };
    return JSON.stringify([me.tenant, me.sub]);
  }

  const slot = (exportId, action) => `${INTENT_SLOT}${who()}:${action}:${exportId}`;

  function saveIntent(intent) {
    sessionStorage.setItem(slot(intent.exportId, intent.action), JSON.stringify(intent));
    return intent;
  }

  function newIntent(exportId, action) {
    return saveIntent({ exportId, action, key: freshKey(action), body: null });
  }

  // The intent still waiting for a final answer, or a new one.
  function openIntent(exportId, action) {
    try {
      const kept = JSON.parse(sessionStorage.getItem(slot(exportId, action)));
      if (kept && typeof kept.key === 'string' && (kept.body === null || typeof kept.body === 'string')) return kept;
    } catch {
      // an unreadable slot is replaced
    }
    return newIntent(exportId, action);
  }

  function endIntent(intent) {
    sessionStorage.removeItem(slot(intent.exportId, intent.action));
  }

  // Signing out forgets every decision left unanswered in this tab.
  function dropIntents() {
    for (const name of Object.keys(sessionStorage)) {
      if (name.startsWith(INTENT_SLOT)) sessionStorage.removeItem(name);
    }
  }

  // Whether an answer leaves the intent open, to be retried with the same key —
  // the TypeScript client's default rule (its DEFAULT_RETRY_POLICY and
  // `retryable`): no answer; not a replayed (stored, final) answer and one of
  // 502, 503 or 504 (which idemgate never stores), a 409 still in flight, or a
  // 429 that says when (`Retry-After`, delay-seconds or an HTTP-date). Beside
  // it, a 401 keeps the intent: refused at the door, nothing stored, and the
  // same person's fresh token resends it. Any other answer is final.
  const RETRIED_STATUSES = [502, 503, 504];
  const HTTP_DATE = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$|^(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day, \d{2}-(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-\d{2} \d{2}:\d{2}:\d{2} GMT$|^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d{2}:\d{2}:\d{2} \d{4}$/;
  const saysWhen = (value) => typeof value === 'string' && (/^\d+$/.test(value.trim()) || HTTP_DATE.test(value.trim()));
  const retryable = (res) => res.network || res.status === 401 || (!res.replayed && (
    RETRIED_STATUSES.includes(res.status)
    || (res.status === 409 && problemType(res) === 'idempotency-key-in-flight')
    || (res.status === 429 && saysWhen(res.retryAfter))));

  // Sends the intent's request; a body edited since an unanswered attempt is a
  // different request, so it gets a new key. Answers [res, intent].
  async function send(intent, method, path, body) {
    const text = JSON.stringify(body);
    if (intent.body !== null && intent.body !== text) intent = newIntent(intent.exportId, intent.action);
    intent.body = text;
    saveIntent(intent);
    const res = await api(method, path, text, intent.key);
    if (!retryable(res)) endIntent(intent);
    return [res, intent];
  }

  // Runs one action from its button. The page stays busy — the button disabled,
  // other actions ignored — until the answer is shown and, after a success, the
  // export is read again: a second click of a double click lands on a page that
  // no longer offers the action, whatever moved under the pointer.
  async function run(action, intent, body, button) {
    if (state.busy) return null;
    state.busy = true;
    button.disabled = true;
    const result = $('action-result');
    say(result, 'Sending…', 'pending');
    let res;
    try {
      [res, intent] = await send(intent, METHODS[action] || 'PUT', exportPath(intent.exportId, `/${action}`), body);
      if (ok(res)) {
        const first = action === 'approve' && res.data && res.data.status === 'awaiting_second_approval';
        const done = first
          ? 'Export approved (first approval): the corrections change an amount, so it now waits for a second approver.'
          : `Export ${VERBS[action]}.`;
        const replay = res.replayed ? ' This request had already been applied: this is its stored answer.' : '';
        say(result, done + replay, 'success');
        closeForms();
        await Promise.all([openExport(intent.exportId), loadList()]);
      } else {
        sayLines(result, explain(action, res), 'error');
        // A refused token hides the page: say it where it stays visible.
        if (!res.network && res.status === 401) readFailed(res);
        // A failed delivery moved the export (to `failed`, one attempt more):
        // show it as it is now, the form kept open for another try.
        if (res.status === 502 && problemType(res) === 'delivery-failed') {
          await Promise.all([openExport(intent.exportId), loadList()]);
        }
      }
    } finally {
      state.busy = false;
      button.disabled = Boolean(button.dataset.why);
    }
    return res;
  }

  // ---- action forms ------------------------------------------------------

  function closeForms() {
    for (const f of Object.values(forms)) show(f.form, false);
    stopChecks();
  }

  function openForm(action) {
    if (!state.exportRow || state.busy) return;
    closeForms();
    clearMessages();
    const f = forms[action];
    f.intent = openIntent(state.exportId, action);
    try {
      f.fill(f.intent.body === null ? null : JSON.parse(f.intent.body));
    } catch {
      f.intent = newIntent(state.exportId, action);
      f.fill(null);
    }
    f.keyNode.textContent = f.intent.key;
    if (f.intent.body !== null) {
      say($('action-result'), 'An earlier attempt of this action got no answer. Submitting again reuses its request key.', 'pending');
    }
    show(f.form, true);
    if (f.opened) f.opened();
  }

  // ---- the correction form and its check ---------------------------------
  //
  // The approver corrects the data in a form (the invoice's header fields and a
  // table of its lines), prefilled from the export's data. What is sent is the
  // data the form was filled from with the edited fields replaced: a field left
  // as shown keeps its stored value and type, an edited one is sent as the
  // string typed (amounts and quantities are never read as JS numbers); keys
  // the form does not show are kept as they are. The raw JSON stays behind
  // "Advanced: edit as JSON": opening it fills it from the form, and while it
  // is open the JSON is what is checked and sent; closing it fills the form
  // from the JSON (when it parses as an object).

  const HEADER_FIELDS = ['vendor_name', 'invoice_number', 'invoice_date', 'currency', 'total_amount'];
  const LINE_FIELDS = [
    ['description', 'Description'], ['quantity', 'Quantity'], ['unit_price', 'Unit price'], ['amount', 'Amount'],
  ];
  const CHECK_DELAY_MS = 300;
  // `seq`: which check is the latest (an older one's answer is dropped).
  const checks = { seq: 0, timer: null };
  const correction = { base: null };

  const clone = (v) => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));
  const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  // A stored value as an input shows it.
  const shown = (v) => (v === null || v === undefined ? '' : typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v));

  // The data the approval would correct: the approved data if any, else the prepared.
  function currentData(row) {
    return row.approved_data !== null && row.approved_data !== undefined ? row.approved_data : row.prepared_data;
  }

  // The value of one field after the form: the stored one if left as shown.
  function edited(target, name, orig, typed) {
    if (typed === shown(orig)) return;
    if (orig === undefined && typed === '') return;
    target[name] = typed;
  }

  function lineRow(orig) {
    const tr = el('tr', 'line');
    tr.line = isObject(orig) ? orig : {};
    for (const [name, title] of LINE_FIELDS) {
      const input = document.createElement('input');
      input.type = 'text';
      input.spellcheck = false;
      input.dataset.field = name;
      input.setAttribute('aria-label', title);
      if (name !== 'description') input.inputMode = 'decimal';
      input.value = shown(tr.line[name]);
      tr.append(cell(title, name === 'description' ? '' : 'num', input));
    }
    const remove = el('button', 'cancel remove-line', 'Remove');
    remove.type = 'button';
    remove.addEventListener('click', () => {
      tr.remove();
      scheduleCheck();
    });
    tr.append(el('td', 'remove', remove));
    return tr;
  }

  function fillCorrection(data) {
    const d = isObject(data) ? data : {};
    correction.base = clone(d);
    for (const name of HEADER_FIELDS) $(`correct-${name}`).value = shown(d[name]);
    const lines = Array.isArray(d.line_items) ? d.line_items : [];
    $('correct-lines').tBodies[0].replaceChildren(...lines.map(lineRow));
  }

  // The form's data: the data it was filled from, with what was edited.
  function formData() {
    const base = correction.base || {};
    const out = clone(base);
    for (const name of HEADER_FIELDS) edited(out, name, base[name], $(`correct-${name}`).value);
    const rows = [...$('correct-lines').tBodies[0].rows];
    if (Array.isArray(base.line_items) || rows.length) {
      out.line_items = rows.map((tr) => {
        const line = clone(tr.line);
        for (const input of tr.querySelectorAll('input')) edited(line, input.dataset.field, tr.line[input.dataset.field], input.value);
        return line;
      });
    }
    return out;
  }

  const jsonOpen = () => $('approve-correct').checked;

  // The data to approve: the JSON while it is open, else the form's. Throws
  // when the JSON does not parse.
  function correctedData() {
    if (!jsonOpen()) return formData();
    try {
      return JSON.parse($('approve-data').value);
    } catch (e) {
      throw new Error(`The approved data is not valid JSON: ${e.message}`);
    }
  }

  // Whether the data is a correction: it differs from the export's data.
  const isCorrection = (data) => JSON.stringify(data) !== JSON.stringify(currentData(state.exportRow));

  const secondApproval = () => Boolean(state.exportRow) && state.exportRow.status === 'awaiting_second_approval';

  function stopChecks() {
    checks.seq += 1;
    clearTimeout(checks.timer);
    checks.timer = null;
  }

  function scheduleCheck() {
    if (secondApproval()) return;
    clearTimeout(checks.timer);
    checks.timer = setTimeout(runCheck, CHECK_DELAY_MS);
  }

  // Asks the server what approving the data as it now stands would do. Only
  // the latest check's answer is shown: an answer arriving after a later
  // check was started, after the form closed or another export was opened,
  // is dropped.
  async function runCheck() {
    clearTimeout(checks.timer);
    checks.timer = null;
    if (!state.exportRow || $('approve-form').hidden || secondApproval()) return;
    const seq = ++checks.seq;
    const id = state.exportId;
    const stateNode = $('check-state');
    let data;
    try {
      data = correctedData();
    } catch (e) {
      say(stateNode, `${e.message}. Nothing was checked.`, 'error');
      show($('check-result'), false);
      return;
    }
    const body = isCorrection(data) ? { approved_data: data } : {};
    say(stateNode, 'Checking…', 'pending');
    const res = await api('POST', exportPath(id, '/check'), JSON.stringify(body));
    if (seq !== checks.seq || id !== state.exportId || $('approve-form').hidden) return;
    if (!ok(res)) {
      sayLines(stateNode, explain('check', res), 'error');
      show($('check-result'), false);
      return;
    }
    say(stateNode, '');
    renderCheck(res.data);
  }

  function renderCheck(c) {
    const errors = Array.isArray(c.validation_errors) ? c.validation_errors : [];
    const warnings = Array.isArray(c.validation_warnings) ? c.validation_warnings : [];
    const score = $('check-score');
    if (c.approvable) {
      say(score, `Quality score ${c.quality_score} (threshold ${c.threshold}): it can be approved.`, 'good');
    } else {
      say(score, `Quality score ${c.quality_score} is below the threshold of ${c.threshold}: approval will be refused. Correct the data or reject the export.`, 'bad');
    }
    const findings = [];
    for (const [kind, list] of [['error', errors], ['warning', warnings]]) {
      for (const f of list) findings.push(el('li', kind, el('strong', '', kind), ' ', ...words(`${f.field}: ${f.message || f.code}`)));
    }
    if (!findings.length) findings.push(el('li', '', 'No findings.'));
    $('check-findings').replaceChildren(...findings);

    const changes = Array.isArray(c.changes) ? c.changes : [];
    const notes = [];
    if (!changes.length) {
      notes.push('No change against the prepared data: it would be approved as prepared.');
    } else {
      notes.push(`${changes.length} field${changes.length > 1 ? 's' : ''} changed against the prepared data: a change reason is required.`);
      if (c.second_approval_required) {
        notes.push('A second approver will be needed: the corrections change an amount, so another approver (not you, not the preparer) must approve it too.');
      } else if (c.changes_an_amount) {
        notes.push('The corrections change an amount; no second approval is needed.');
      } else {
        notes.push('No second approval is needed.');
      }
    }
    $('check-notes').replaceChildren(...notes.map((n, i) => el('li', i === 1 && c.second_approval_required ? 'second' : '', n)));
    $('check-notes').dataset.reasonRequired = String(Boolean(c.change_reason_required));
    $('check-notes').dataset.secondApproval = String(Boolean(c.second_approval_required));
    $('check-diff').tBodies[0].replaceChildren(...changes.map(changeRow));
    show($('check-diff'), changes.length > 0);

    const p = c.preview || {};
    const note = $('check-preview-note');
    note.replaceChildren(...words(`File posting would record: ${p.file_name} · ${p.content_type} · ${p.size} bytes`));
    $('check-preview').textContent = typeof p.content === 'string' ? p.content : '';
    show($('check-result'), true);
  }

  function changeRow(c) {
    return el('tr', c.kind,
      cell('Field', 'path', c.path),
      cell('Change', '', c.kind),
      cell('Prepared', 'before', c.kind === 'added' ? '—' : compact(c.before)),
      cell('Corrected', 'after', c.kind === 'removed' ? '—' : compact(c.after)));
  }

  // The JSON view opened (filled from the form) or closed (the form filled
  // from the JSON, when it parses as an object).
  function toggleJson(open) {
    if (open) {
      $('approve-data').value = JSON.stringify(formData(), null, 2);
    } else {
      try {
        const data = JSON.parse($('approve-data').value);
        if (isObject(data)) fillCorrection(data);
      } catch {
        // the form keeps what it had
      }
    }
    show($('approve-json'), open);
    $('correct-form').disabled = open;
    scheduleCheck();
  }

  function setupApprove() {
    const f = {
      form: $('approve-form'),
      keyNode: $('approve-key'),
      fill(body) {
        const row = state.exportRow;
        const second = secondApproval();
        $('approve-heading').textContent = second ? 'Approve (second approval)' : 'Approve';
        $('approve-submit').textContent = second ? 'Approve (second approval)' : 'Approve';
        show($('approve-corrections'), !second);
        show($('check'), !second);
        const note = $('approve-second-note');
        say(note, second
          ? `${row.approved_by} made the first approval. Approving confirms the data as first approved (the changes are listed above); it cannot be corrected again here — request changes instead.`
          : '');
        const corrected = body && body.approved_data !== undefined;
        fillCorrection(corrected ? body.approved_data : currentData(row));
        $('approve-correct').checked = false;
        show($('approve-json'), false);
        $('correct-form').disabled = false;
        $('approve-data').value = '';
        $('approve-reason').value = (body && body.change_reason) || '';
        $('approve-comments').value = (body && body.approval_comments) || '';
        say($('check-state'), '');
        show($('check-result'), false);
      },
      opened() {
        if (!secondApproval()) runCheck();
      },
      body() {
        const body = {};
        if (!secondApproval()) {
          const data = correctedData();
          if (isCorrection(data)) {
            body.approved_data = data;
            const reason = $('approve-reason').value.trim();
            if (!reason) throw new Error('You corrected the data: a change reason is required.');
            body.change_reason = reason;
          }
        }
        const comments = $('approve-comments').value.trim();
        if (comments) body.approval_comments = comments;
        return body;
      },
    };
    $('approve-correct').addEventListener('change', (e) => toggleJson(e.target.checked));
    $('correct-form').addEventListener('input', scheduleCheck);
    $('approve-data').addEventListener('input', scheduleCheck);
    $('correct-add-line').addEventListener('click', () => {
      const tr = lineRow(null);
      $('correct-lines').tBodies[0].append(tr);
      tr.querySelector('input').focus();
      scheduleCheck();
    });
    return f;
  }

  // A form whose one field is a required reason (`<action>-reason`).
  function reasonForm(action, missing) {
    return {
      form: $(`${action}-form`),
      keyNode: $(`${action}-key`),
      fill(body) {
        $(`${action}-reason`).value = (body && body.reason) || '';
      },
      body() {
        const reason = $(`${action}-reason`).value.trim();
        if (!reason) throw new Error(missing);
        return { reason };
      },
    };
  }

  function setupPost() {
    return {
      form: $('post-form'),
      keyNode: $('post-key'),
      fill(body) {
        $('post-reference').value = (body && body.external_reference) || '';
      },
      body() {
        const reference = $('post-reference').value.trim();
        return reference ? { external_reference: reference } : {};
      },
    };
  }

  async function submitForm(action, event) {
    event.preventDefault();
    if (state.busy) return;
    say($('message'), '');
    const f = forms[action];
    let body;
    try {
      body = f.body();
    } catch (e) {
      say($('action-result'), e.message, 'error');
      return;
    }
    if (f.intent.body !== null && f.intent.body !== JSON.stringify(body)) {
      // Edited since an unanswered attempt: another request, so another decision.
      f.intent = newIntent(state.exportId, action);
      f.keyNode.textContent = f.intent.key;
    }
    const res = await run(action, f.intent, body, $(`${action}-submit`));
    if (res && !ok(res) && !retryable(res)) {
      // A final refusal: pressing again is a new decision, with a new key.
      f.intent = newIntent(state.exportId, action);
      f.keyNode.textContent = f.intent.key;
    }
  }

  async function review(event) {
    if (!state.exportRow || state.busy) return;
    closeForms();
    clearMessages();
    const intent = openIntent(state.exportId, 'review');
    await run('review', intent, {}, event.currentTarget);
  }

  // ---- reads and rendering -----------------------------------------------

  function findingsText(row) {
    const errors = Array.isArray(row.validation_errors) ? row.validation_errors : [];
    const warnings = Array.isArray(row.validation_warnings) ? row.validation_warnings : [];
    // In words: the field and what is wrong with it (the code is the server's).
    const said = (list) => list.map((f) => f.message || `${f.field}: ${f.code}`).join('; ');
    const parts = [];
    if (errors.length) parts.push(`${errors.length} error${errors.length > 1 ? 's' : ''}: ${said(errors)}`);
    if (warnings.length) parts.push(`${warnings.length} warning${warnings.length > 1 ? 's' : ''}: ${said(warnings)}`);
    return parts.join(' · ') || 'none';
  }

  // The score, and the staged data's beside it when an approval with
  // corrections changed it (history is kept, never rewritten).
  function qualityText(row) {
    const staged = row.staged_quality_score;
    if (staged === undefined || staged === null || staged === row.quality_score) return String(row.quality_score);
    return `${row.quality_score} (staged ${staged})`;
  }

  // Why the signed-in person may not take `action` on `row`, before anyone
  // presses it: the rules the server enforces (it still does), from the
  // token's claims. `null` when nothing stands in the way.
  function whyNot(action, row) {
    if (action === 'review') return null;
    const c = state.me || { sub: null, roles: [] };
    const roles = c.roles;
    const [doing, needed] = NEEDS[action];
    if (!needed.some((r) => roles.includes(r))) {
      return `${doing} needs the ${needed.join(' or ')} role, which you do not have.`;
    }
    if (action === 'approve' && row.prepared_by === c.sub) {
      return 'You prepared this export, so someone else must approve it (segregation of duties).';
    }
    if (action === 'post' && row.prepared_by === c.sub) {
      return 'You prepared this export, so someone else must post it (segregation of duties).';
    }
    if (action === 'approve' && row.status === 'awaiting_second_approval' && row.approved_by === c.sub) {
      return 'You made the first approval, so another approver must make the second (segregation of duties).';
    }
    if (action === 'request-changes' && row.status === 'prepared') {
      return 'The export is with its preparer: changes can be requested once it is submitted for review.';
    }
    return null;
  }

  // Shows an action disabled with its reason, or enabled.
  function refuse(action, why) {
    const button = $(`${action}-open`);
    button.dataset.why = why || '';
    button.disabled = Boolean(why);
    button.title = why || '';
    const list = $('actions-why');
    const reasons = ACTIONS
      .filter((a) => !$(`${a}-open`).hidden)
      .map((a) => $(`${a}-open`).dataset.why)
      .filter(Boolean);
    list.replaceChildren(...[...new Set(reasons)].map((w) => el('li', '', w)));
    show(list, reasons.length > 0);
  }

  // One table cell; `name` labels it where the table is shown as cards (a phone).
  function cell(name, className, ...children) {
    const td = el('td', className, ...children);
    td.dataset.label = name;
    return td;
  }

  function exportRow(row) {
    const sum = row.summary || {};
    const open = el('button', 'link', ...words(sum.invoice_number || row.invoice_id));
    open.type = 'button';
    open.dataset.exportId = row.id;
    open.addEventListener('click', () => openExport(row.id, true));
    const tr = el('tr', row.id === state.exportId ? 'selected' : '',
      cell('Invoice', '', open, el('span', 'sub', ...words(row.invoice_id))),
      cell('Vendor', '', ...words(sum.vendor_name)),
      cell('Invoice date', 'date', ...words(sum.invoice_date)),
      cell('Total', 'num', ...words([sum.total_amount, sum.currency].filter((x) => x !== null && x !== undefined).join(' '))),
      cell('Status', '', el('span', `badge ${row.status}`, label(row.status))),
      cell('Quality', 'num', ...words(qualityText(row))),
      cell('Findings', 'findings', ...words(findingsText(row))),
      cell('Decide by (UTC)', 'date', ...words(time(row.approval_deadline))),
      cell('Prepared by', '', ...words(row.prepared_by)));
    tr.dataset.exportId = row.id;
    return tr;
  }

  async function loadList(more = false) {
    if (!state.me) return;
    const offset = more ? state.offset : 0;
    const status = $('status-filter').value;
    const query = new URLSearchParams({ offset: String(offset), limit: String(PAGE_SIZE) });
    if (status) query.set('status', status);
    const res = await api('GET', `/v1/staging/exports?${query}`);
    if (!ok(res)) {
      readFailed(res);
      return;
    }
    say($('message'), '');
    const rows = (res.data.exports || []).map(exportRow);
    const tbody = $('exports').tBodies[0];
    if (more) tbody.append(...rows);
    else tbody.replaceChildren(...rows);
    show($('list-empty'), tbody.rows.length === 0);
    state.offset = res.data.next_offset ?? 0;
    show($('more'), res.data.next_offset !== null && res.data.next_offset !== undefined);
  }

  function field(name, value) {
    if (value === null || value === undefined || value === '') return [];
    return [el('dt', '', name), el('dd', '', ...(typeof value === 'string' ? words(value) : [value]))];
  }

  // A posted or rolled-back export's outcome, first: who posted it where, under
  // which reference and when; who rolled it back, when and why.
  function renderOutcome(row) {
    const posted = row.status === 'posted' || row.status === 'rolled_back';
    show($('outcome'), posted);
    $('outcome').className = posted ? `outcome ${row.status}` : '';
    if (!posted) {
      $('outcome-fields').replaceChildren();
      return;
    }
    const rolledBack = row.status === 'rolled_back';
    $('outcome-heading').textContent = rolledBack ? 'Posted, then rolled back' : 'Posted';
    const given = text(row.caller_reference) && row.caller_reference !== row.external_reference
      ? row.caller_reference : null;
    $('outcome-fields').replaceChildren(
      ...field('Posted by', row.posted_by),
      ...field('Posted to', row.destination_system),
      ...field('External reference', row.external_reference && el('span', 'w', row.external_reference)),
      ...field('Reference given when posting', given && el('span', 'w', given)),
      ...field('Posted at', when(row.posted_at)),
      ...(rolledBack ? [
        ...field('Rolled back by', row.rolled_back_by),
        ...field('Rolled back at', when(row.rolled_back_at)),
        ...field('Reason', row.rollback_reason && el('span', '', ...words(row.rollback_reason))),
      ] : []),
    );
  }

  // An export sent back to its preparer: by whom, when and why.
  function renderChangesRequested(row) {
    const node = $('changes-requested');
    if (!text(row.changes_requested_by)) {
      node.replaceChildren();
      show(node, false);
      return;
    }
    const at = when(row.changes_requested_at);
    node.replaceChildren(`Changes requested by ${row.changes_requested_by}`, ...(at ? [' on ', at] : []),
      ': ', ...words(row.changes_requested_reason || '—'));
    show(node, true);
  }

  // An export awaiting a second approval: who made the first, what it changed,
  // and who may make the second.
  function renderSecondApproval(row, diff) {
    const waiting = row.status === 'awaiting_second_approval';
    show($('second-approval'), waiting);
    if (!waiting) {
      $('second-approval-changes').replaceChildren();
      return;
    }
    const at = when(row.approved_at);
    $('second-approval-who').replaceChildren(
      `${row.approved_by} made the first approval`, ...(at ? [' on ', at] : []),
      ', with corrections that change an amount',
      ...(text(row.change_reason) ? [' (reason: ', ...words(row.change_reason), ')'] : []),
      `. A second approver is needed: an approver who is neither ${row.approved_by} nor the preparer, ${row.prepared_by}.`);
    const changes = ok(diff) && Array.isArray(diff.data.changes) ? diff.data.changes : [];
    $('second-approval-changes').replaceChildren(...changes.map((c) => el('li', c.kind,
      ...words(c.kind === 'added' ? `${c.path}: added ${compact(c.after)}`
        : c.kind === 'removed' ? `${c.path}: removed (was ${compact(c.before)})`
          : `${c.path}: ${compact(c.before)} → ${compact(c.after)}`))));
  }

  function renderExport(row) {
    $('detail-title').textContent = `Invoice ${row.invoice_id}`;
    renderOutcome(row);
    renderChangesRequested(row);
    const twoApprovals = row.status === 'awaiting_second_approval' || Boolean(text(row.second_approved_by));
    $('detail-fields').replaceChildren(
      ...field('Export', row.id),
      ...field('Status', label(row.status)),
      ...field('Quality score', qualityText(row)),
      ...field('Format', row.export_format),
      ...field('Destination', row.destination_system),
      ...field('Prepared by', row.prepared_by),
      // The preparer moving their own export into review submits it; anyone
      // else reviews it.
      ...field(row.reviewed_by && row.reviewed_by === row.prepared_by ? 'Submitted for review by' : 'Reviewed by',
        row.reviewed_by),
      ...field(twoApprovals ? 'First approval by' : 'Approved by', row.approved_by),
      ...field('First approval at', twoApprovals ? when(row.approved_at) : ''),
      ...field('Second approval by', row.second_approved_by),
      ...field('Second approval at', when(row.second_approved_at)),
      ...field('Change reason', row.change_reason),
      ...field('Rejected by', row.rejected_by),
      ...field('Rejection reason', row.rejection_reason),
      ...field('Last delivery error', row.status === 'failed' ? row.last_error : ''),
      ...field('Delivery attempts', row.status === 'failed' ? `${row.retries} of ${row.max_retries}` : ''),
      ...field('Staged', when(row.created_at)),
      ...field('Updated', when(row.updated_at)),
    );
    const waiting = WAITING.includes(row.status);
    const retriesLeft = row.status === 'failed' && Number(row.retries) < Number(row.max_retries);
    const offered = {
      review: row.status === 'prepared', approve: waiting, reject: waiting, 'request-changes': waiting,
      post: row.status === 'approved' || retriesLeft, rollback: row.status === 'posted',
    };
    const second = row.status === 'awaiting_second_approval';
    $('approve-open').textContent = second ? 'Approve (second approval)' : 'Approve…';
    $('post-open').textContent = row.status === 'failed' ? 'Post again…' : 'Post…';
    for (const [action, yes] of Object.entries(offered)) {
      show($(`${action}-open`), yes);
      refuse(action, yes ? whyNot(action, row) : null);
      if (yes) continue;
      // An action the export's state no longer allows: nothing to show or retry.
      if (forms[action]) show(forms[action].form, false);
      sessionStorage.removeItem(slot(row.id, action));
    }

    const items = [];
    for (const [kind, list] of [['error', row.validation_errors], ['warning', row.validation_warnings]]) {
      for (const f of Array.isArray(list) ? list : []) {
        items.push(el('li', kind, el('strong', '', kind), ` ${f.field}: ${f.message}`));
      }
    }
    if (!items.length) items.push(el('li', '', 'No findings.'));
    // What the staged data was found to have, when the approved data differs.
    const changed = JSON.stringify(row.staged_validation_errors) !== JSON.stringify(row.validation_errors)
      || JSON.stringify(row.staged_validation_warnings) !== JSON.stringify(row.validation_warnings);
    if (changed) {
      for (const [kind, list] of [['error', row.staged_validation_errors], ['warning', row.staged_validation_warnings]]) {
        for (const f of Array.isArray(list) ? list : []) {
          items.push(el('li', `${kind} staged`, el('strong', '', `${kind}, as staged`), ` ${f.field}: ${f.message}`));
        }
      }
    }
    $('findings').replaceChildren(...items);
    const approved = row.approved_data !== null && row.approved_data !== undefined;
    $('data-heading').textContent = approved ? 'Approved data' : 'Prepared data';
    $('data').textContent = JSON.stringify(approved ? row.approved_data : row.prepared_data, null, 2);
  }

  function renderDiff(res) {
    const tbody = $('diff').tBodies[0];
    if (!ok(res)) {
      tbody.replaceChildren();
      say($('diff-note'), explain('read', res)[0], 'error');
      return;
    }
    const d = res.data;
    const changes = Array.isArray(d.changes) ? d.changes : [];
    let note;
    if (!d.approved) note = 'Not approved yet: the diff records the approver\'s corrections at approval.';
    else if (!changes.length) note = 'Approved as prepared: no field was changed.';
    else {
      const at = d.status === 'awaiting_second_approval' ? 'at the first approval' : 'at approval';
      note = `${changes.length} field${changes.length > 1 ? 's' : ''} corrected ${at}. Reason: ${d.change_reason ?? '—'}`;
    }
    say($('diff-note'), note);
    tbody.replaceChildren(...changes.map((c) => el('tr', c.kind,
      cell('Field', 'path', c.path),
      cell('Change', '', c.kind),
      cell('Before', 'before', c.kind === 'added' ? '—' : compact(c.before)),
      cell('After', 'after', c.kind === 'removed' ? '—' : compact(c.after)))));
    show($('diff'), changes.length > 0);
  }

  function renderPreview(res) {
    if (!ok(res)) {
      say($('preview-note'), res.status === 404 ? 'No file preview available.' : explain('read', res)[0], 'error');
      $('preview').textContent = '';
      return;
    }
    const p = res.data;
    const source = {
      posted: 'the posted file',
      approved: 'as it will be posted, from the approved data',
      prepared: 'as it would be posted, from the prepared data',
    }[p.source] || p.source;
    const note = $('preview-note');
    say(note, '');
    note.replaceChildren(...words(`${p.file_name} · ${p.content_type} · ${p.size} bytes · ${source}`));
    show(note, true);
    $('preview').textContent = p.content;
  }

  // The detail fields other events may carry, in words, in this order.
  const NOTE_FIELDS = [
    ['reason', 'Reason'], ['change_reason', 'Reason'], ['comments', 'Comments'], ['comment', 'Comments'],
    ['approval_comments', 'Comments'], ['review_comments', 'Comments'], ['note', 'Note'], ['notes', 'Note'],
    ['message', 'Note'], ['error', 'Error'],
  ];

  // What one audit entry says, in words: [what happened, notes (reason,
  // comments, …)]. The entry's snapshots and request key are for machines and
  // are never shown; an event this page does not know (a newer server) is
  // shown by its name made readable, with its state change and reasons.
  function describe(a) {
    const d = a.detail && typeof a.detail === 'object' && !Array.isArray(a.detail) ? a.detail : {};
    const after = a.after && typeof a.after === 'object' ? a.after : {};
    const notes = [];
    const note = (name, v) => {
      const t = text(v);
      if (t && !notes.includes(`${name}: ${t}`)) notes.push(`${name}: ${t}`);
    };
    const to = text(after.destination_system) || 'the accounting system';
    switch (a.event) {
      case 'stage':
        return [d.batch_id ? 'Staged for approval (in a batch)' : 'Staged for approval', notes];
      case 'review':
        note('Comments', d.comments);
        return [after.prepared_by && a.actor === after.prepared_by ? 'Submitted for review' : 'Review started', notes];
      case 'approve': {
        if (d.second_approval) {
          note('First approval by', d.first_approved_by);
          note('Comments', d.comments);
          return ['Approved (second approval)', notes];
        }
        const n = typeof d.changes === 'number' ? d.changes : 0;
        if (n) notes.push(`${n} field${n > 1 ? 's' : ''} corrected`);
        note('Reason', d.change_reason);
        note('Comments', d.comments);
        return [n ? 'Approved with corrections' : 'Approved', notes];
      }
      case 'reject':
        note('Reason', d.reason);
        return ['Rejected', notes];
      case 'expire':
        notes.push(!text(d.reason) || d.reason === 'approval_timeout'
          ? 'No decision within the approval time limit' : `Reason: ${readable(d.reason)}`);
        return ['Rejected automatically', notes];
      case 'post': {
        const ref = text(d.external_reference) || text(after.external_reference);
        if (text(d.caller_reference) && d.caller_reference !== ref) note('Reference given when posting', d.caller_reference);
        return [`Posted to ${to}` + (ref ? ` as ${ref}` : ''), notes];
      }
      case 'post_failed':
        note('Error', d.error);
        return [`Posting to ${to} failed`, notes];
      case 'rollback':
        note('Reason', d.reason);
        return ['Rolled back', notes];
      default: {
        if (a.from && a.to && a.from !== a.to) notes.push(`Moved from ${label(a.from)} to ${label(a.to)}`);
        for (const [key, name] of NOTE_FIELDS) note(name, d[key]);
        return [readable(a.event) || 'Changed', notes];
      }
    }
  }

  function renderAudit(res) {
    const tbody = $('audit').tBodies[0];
    if (!ok(res)) {
      tbody.replaceChildren(el('tr', '', el('td', 'error', explain('read', res)[0])));
      return;
    }
    const entries = Array.isArray(res.data.entries) ? res.data.entries : [];
    tbody.replaceChildren(...entries.map((a) => {
      const [what, notes] = describe(a);
      const tr = el('tr', '',
        cell('When', 'when', when(a.created_at)),
        cell('Who', 'who', ...words(a.actor === 'system' ? 'System (automatic)' : a.actor)),
        cell('What', 'what', ...words(what)),
        cell('Reason and comments', 'notes', ...notes.map((n) => el('span', 'note', ...words(n)))));
      tr.dataset.event = a.event;
      return tr;
    }));
  }

  function showDetail(visible) {
    show($('detail'), visible);
    if (visible) return;
    state.exportId = null;
    state.exportRow = null;
  }

  async function openExport(id, fresh = false) {
    if (fresh) {
      closeForms();
      clearMessages();
    }
    const call = ++state.opened;
    const [row, diff, preview, audit] = await Promise.all([
      api('GET', exportPath(id)),
      api('GET', exportPath(id, '/diff')),
      api('GET', exportPath(id, '/preview')),
      api('GET', exportPath(id, '/audit')),
    ]);
    if (call !== state.opened) return;
    if (!ok(row)) {
      readFailed(row);
      return;
    }
    state.exportId = id;
    state.exportRow = row.data;
    for (const tr of $('exports').tBodies[0].rows) tr.classList.toggle('selected', tr.dataset.exportId === id);
    renderExport(row.data);
    renderSecondApproval(row.data, diff);
    renderDiff(diff);
    renderPreview(preview);
    renderAudit(audit);
    showDetail(true);
  }

  // ---- wiring ------------------------------------------------------------

  function start() {
    forms.approve = setupApprove();
    forms.reject = reasonForm('reject', 'A reason is required to reject an export.');
    forms['request-changes'] = reasonForm('request-changes',
      'A reason is required to request changes: the preparer needs to know what to change.');
    forms.post = setupPost();
    forms.rollback = reasonForm('rollback', 'A reason is required to roll back a posted export.');
    for (const action of Object.keys(forms)) {
      $(`${action}-form`).addEventListener('submit', (e) => submitForm(action, e));
      $(`${action}-open`).addEventListener('click', () => openForm(action));
    }
    $('review-open').addEventListener('click', review);
    for (const [action, f] of Object.entries(forms)) {
      // Cancelling drops the decision: opening the form again is a new one.
      $(`${action}-cancel`).addEventListener('click', () => {
        if (state.busy) return;
        if (f.intent) endIntent(f.intent);
        closeForms();
      });
    }
    $('token-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const token = $('token-input').value.trim().replace(/^Bearer\s+/i, '');
      if (!token) return;
      sessionStorage.setItem(TOKEN_SLOT, token);
      $('token-input').value = '';
      clearMessages();
      showDetail(false);
      if (await signIn(token)) loadList();
    });
    // Signing out forgets the token and this tab's unanswered decisions;
    // signed in through Access, it ends the Access session too.
    $('sign-out').addEventListener('click', () => {
      const access = !state.token && state.me && state.me.via === 'access';
      sessionStorage.removeItem(TOKEN_SLOT);
      dropIntents();
      clearMessages();
      closeForms();
      showDetail(false);
      signedOut();
      $('exports').tBodies[0].replaceChildren();
      if (access) {
        window.location.assign(ACCESS_LOGOUT);
        return;
      }
      $('token-input').focus();
    });
    // A reload of the list the person asks for: what was said before no longer applies.
    const reload = (more) => {
      clearMessages();
      loadList(more);
    };
    $('status-filter').addEventListener('change', () => reload(false));
    $('refresh').addEventListener('click', () => reload(false));
    $('more').addEventListener('click', () => reload(true));
    // A token kept by this tab, else none: signed in if behind Access. The
    // sign-in panel shows only once the server said nobody is signed in.
    signIn(sessionStorage.getItem(TOKEN_SLOT)).then((yes) => {
      if (yes) loadList();
    });
  }

  start();
})();
