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

  const $ = (id) => document.getElementById(id);
  // `opened`: which openExport call is the latest (an older one's answers,
  // arriving late, are dropped: the page never shows one export's detail after
  // another was asked for).
  const state = { token: null, exportId: null, exportRow: null, offset: 0, busy: false, opened: 0 };
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

  // ---- the token ---------------------------------------------------------

  function claims(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const json = new TextDecoder().decode(Uint8Array.from(atob(part), (c) => c.charCodeAt(0)));
      const c = JSON.parse(json);
      return c && typeof c === 'object' ? c : null;
    } catch {
      return null;
    }
  }

  // Signed in (a token) or not: the sign-in panel, or the person's name and
  // roles beside "Sign out".
  function useToken(token) {
    state.token = token || null;
    const c = token ? claims(token) : null;
    if (!token) {
      say($('whoami'), '');
    } else if (c) {
      const roles = Array.isArray(c.roles) ? c.roles.join(', ') : typeof c.roles === 'string' ? c.roles : '';
      say($('whoami'), `Signed in as ${c.sub} (tenant ${c.tenant ?? c.sub})` + (roles ? ` · roles: ${roles}` : ' · no role'));
    } else {
      say($('whoami'), 'Signed in (the token\'s name and roles could not be read).');
    }
    show($('session'), Boolean(token));
    show($('token-panel'), !token);
    show($('main'), Boolean(token));
  }

  // ---- the API -----------------------------------------------------------

  // One request to this Worker's own API (relative URL: same origin only).
  // Answers {status, data, replayed} or {network: true}.
  async function api(method, path, body, key) {
    const headers = { authorization: `Bearer ${state.token}` };
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
        method, headers, body, cache: 'no-store', credentials: 'omit', redirect: 'error', signal: abort.signal,
      });
      const text = await resp.text();
      let data = null;
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
      return { status: resp.status, data, replayed: resp.headers.get('idempotent-replayed') === 'true' };
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

  const VERBS = { approve: 'approved', reject: 'rejected', review: 'put under review', read: 'read' };
  const VERBS_NOUN = { approve: 'Approving', reject: 'Rejecting' };

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
          const hint = action === 'approve' && p.current_state === 'prepared' ? ' Start the review first.' : '';
          return [`This export is ${current}, so it cannot be ${verb} now.${hint}`, server];
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
        if (type === 'idempotency-key-reused') {
          return ['This request key was already used for a different request. Close the form and open it again.', server];
        }
        return ['The request cannot be processed.', server];
      case 400:
        return ['The request was refused as invalid.', server];
      default:
        if (res.status >= 500) {
          return ['The server could not complete the request; nothing was applied.', again];
        }
        return [`Unexpected answer from the server.`, server];
    }
  }

  function readFailed(res) {
    if (!res.network && res.status === 401) {
      sessionStorage.removeItem(TOKEN_SLOT);
      useToken(null);
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
    const c = (state.token && claims(state.token)) || {};
    return JSON.stringify([c.tenant ?? c.sub ?? '', c.sub ?? '']);
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
  // the TypeScript client's default rule: the request did not run to a final
  // answer (no answer; 502, 503 or 504, which idemgate never stores; still in
  // flight), or never reached the key (401: refused at the door, nothing
  // stored). Any other 5xx is final, as it is for the client.
  const RETRIED_STATUSES = [502, 503, 504];
  const retryable = (res) => res.network || RETRIED_STATUSES.includes(res.status) || res.status === 401
    || (res.status === 409 && problemType(res) === 'idempotency-key-in-flight');

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
      [res, intent] = await send(intent, 'PUT', exportPath(intent.exportId, `/${action}`), body);
      if (ok(res)) {
        const done = `Export ${VERBS[action]}.`;
        const replay = res.replayed ? ' This request had already been applied: this is its stored answer.' : '';
        say(result, done + replay, 'success');
        closeForms();
        await Promise.all([openExport(intent.exportId), loadList()]);
      } else {
        sayLines(result, explain(action, res), 'error');
        // A refused token hides the page: say it where it stays visible.
        if (!res.network && res.status === 401) readFailed(res);
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
  }

  function setupApprove() {
    const f = {
      form: $('approve-form'),
      keyNode: $('approve-key'),
      fill(body) {
        const prepared = state.exportRow.prepared_data;
        const corrected = body && body.approved_data !== undefined;
        $('approve-correct').checked = corrected;
        show($('approve-corrections'), corrected);
        $('approve-data').value = JSON.stringify(corrected ? body.approved_data : prepared, null, 2);
        $('approve-reason').value = (body && body.change_reason) || '';
        $('approve-comments').value = (body && body.approval_comments) || '';
      },
      body() {
        const body = {};
        if ($('approve-correct').checked) {
          try {
            body.approved_data = JSON.parse($('approve-data').value);
          } catch (e) {
            throw new Error(`The approved data is not valid JSON: ${e.message}`);
          }
          const reason = $('approve-reason').value.trim();
          if (reason) body.change_reason = reason;
        }
        const comments = $('approve-comments').value.trim();
        if (comments) body.approval_comments = comments;
        return body;
      },
    };
    $('approve-correct').addEventListener('change', (e) => show($('approve-corrections'), e.target.checked));
    return f;
  }

  function setupReject() {
    return {
      form: $('reject-form'),
      keyNode: $('reject-key'),
      fill(body) {
        $('reject-reason').value = (body && body.reason) || '';
      },
      body() {
        const reason = $('reject-reason').value.trim();
        if (!reason) throw new Error('A reason is required to reject an export.');
        return { reason };
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
    const c = (state.token && claims(state.token)) || {};
    const roles = Array.isArray(c.roles) ? c.roles : typeof c.roles === 'string' ? [c.roles] : [];
    if (!roles.includes('approver')) return `${VERBS_NOUN[action]} needs the approver role, which you do not have.`;
    if (action === 'approve' && row.prepared_by === c.sub) {
      return 'You prepared this export, so someone else must approve it (segregation of duties).';
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
    const reasons = ['review', 'approve', 'reject']
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
    if (!state.token) return;
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

  function renderExport(row) {
    $('detail-title').textContent = `Invoice ${row.invoice_id}`;
    renderOutcome(row);
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
      ...field('Approved by', row.approved_by),
      ...field('Change reason', row.change_reason),
      ...field('Rejected by', row.rejected_by),
      ...field('Rejection reason', row.rejection_reason),
      ...field('Staged', when(row.created_at)),
      ...field('Updated', when(row.updated_at)),
    );
    const waiting = row.status === 'prepared' || row.status === 'under_review';
    const offered = { review: row.status === 'prepared', approve: waiting, reject: waiting };
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
    else note = `${changes.length} field${changes.length > 1 ? 's' : ''} corrected at approval. Reason: ${d.change_reason ?? '—'}`;
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
    renderDiff(diff);
    renderPreview(preview);
    renderAudit(audit);
    showDetail(true);
  }

  // ---- wiring ------------------------------------------------------------

  function start() {
    forms.approve = setupApprove();
    forms.reject = setupReject();
    $('approve-form').addEventListener('submit', (e) => submitForm('approve', e));
    $('reject-form').addEventListener('submit', (e) => submitForm('reject', e));
    $('approve-open').addEventListener('click', () => openForm('approve'));
    $('reject-open').addEventListener('click', () => openForm('reject'));
    $('review-open').addEventListener('click', review);
    for (const [action, f] of Object.entries(forms)) {
      // Cancelling drops the decision: opening the form again is a new one.
      $(`${action}-cancel`).addEventListener('click', () => {
        if (state.busy) return;
        if (f.intent) endIntent(f.intent);
        closeForms();
      });
    }
    $('token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const token = $('token-input').value.trim().replace(/^Bearer\s+/i, '');
      if (!token) return;
      sessionStorage.setItem(TOKEN_SLOT, token);
      $('token-input').value = '';
      clearMessages();
      showDetail(false);
      useToken(token);
      loadList();
    });
    // Signing out forgets the token and this tab's unanswered decisions.
    $('sign-out').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_SLOT);
      dropIntents();
      clearMessages();
      closeForms();
      showDetail(false);
      useToken(null);
      $('exports').tBodies[0].replaceChildren();
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
    useToken(sessionStorage.getItem(TOKEN_SLOT));
    loadList();
  }

  start();
})();
