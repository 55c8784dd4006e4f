/*
 * Switchboard pages: forms over the JSON API, cross-tab sync and the idle-expiry warning.
 *
 * - Every call to the API goes through one queue per tab, so a background check of
 *   /api/session never races this tab's own changes (a login, a password change that rotates
 *   the cookie, a platform switch that rewrites a cookie-held session).
 * - Tabs of one browser tell each other about logout, login, platform and password changes
 *   on BroadcastChannel('switchboard'); every signed-in tab also asks GET /api/session once a
 *   second while it is visible (and at once when it becomes visible), which is how a
 *   revocation from another device, a password change elsewhere or an expiry is noticed.
 * - Before the session's expiresAt an idle warning offers "Stay signed in".
 */
/* global sessionStorage, Headers, HTMLInputElement, AbortController, DOMParser, navigator, history */

const POLL_MS = 1000;
/** How often /sessions looks for sessions started or ended elsewhere. */
const SESSION_LIST_MS = 3000;
/** A call that has not answered by then counts as a network failure (and frees the queue). */
const REQUEST_TIMEOUT_MS = 15_000;
/** How long a login, signup, logout or password change waits for another tab's to end. */
const LOCK_WAIT_MS = 20_000;
const SIGNED_OUT_KEY = 'switchboard:signed-out';
/** Set before a reload that left a call undone (the browser's session changed under it): the reloaded page says so. */
const NOT_DONE_KEY = 'switchboard:not-done';
const BACKEND_LABELS = { cookie: 'Cookie', database: 'Database', redis: 'Redis' };

const body = document.body;
const page = body.dataset.page;
const signedInPage = body.classList.contains('app');
const channel = typeof BroadcastChannel === 'function' ? new BroadcastChannel('switchboard') : null;

let csrfToken = document.querySelector('meta[name="csrf-token"]')?.getAttribute('content') ?? '';

// ---------------------------------------------------------------- time

/** Server time minus this device's time (ms), from the Date header; 0 unless the clocks differ by more than 2 s. */
let clockOffset = 0;
const serverNow = () => Date.now() + clockOffset;

function noteServerTime(headers) {
  const date = Date.parse(headers.get('Date') ?? '');
  if (Number.isNaN(date)) return;
  const offset = date - Date.now();
  if (Math.abs(offset - clockOffset) > 2000) clockOffset = offset;
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const thisYearFormat = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit' });
const dayNames = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
const longDateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'long' });
const timeFormat = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' });
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

function relativeTime(ms) {
  const diff = ms - serverNow();
  const abs = Math.abs(diff);
  if (abs < 45_000) return diff < 0 ? 'just now' : 'in less than a minute';
  if (abs < 45 * 60_000) return relativeFormat.format(Math.round(diff / 60_000), 'minute');
  if (abs < 22 * 3_600_000) return relativeFormat.format(Math.round(diff / 3_600_000), 'hour');
  return relativeFormat.format(Math.round(diff / 86_400_000), 'day');
}

const capitalise = (s) => s.charAt(0).toUpperCase() + s.slice(1);

/** "Today, 2:46 PM", "Tomorrow, 9:00 AM", "Mar 3, 2:46 PM", or the full date in another year. */
function formatDate(t) {
  const d = new Date(t);
  const today = new Date(serverNow());
  today.setHours(0, 0, 0, 0);
  const day = new Date(d);
  day.setHours(0, 0, 0, 0);
  const days = Math.round((day.getTime() - today.getTime()) / 86_400_000);
  if (Math.abs(days) <= 1) return `${capitalise(dayNames.format(days, 'day'))}, ${timeFormat.format(d)}`;
  if (d.getFullYear() === today.getFullYear()) return thisYearFormat.format(d);
  return dateFormat.format(d);
}

/** Shows a server-rendered <time> in the reader's time zone, with "(in 2 hours)" when marked relative. */
function renderTime(el) {
  const t = Date.parse(el.getAttribute('datetime') ?? '');
  if (Number.isNaN(t)) return;
  const text = formatDate(t);
  if (el.textContent !== text) el.textContent = text;
  el.title = longDateFormat.format(t);
  if (!el.hasAttribute('data-relative')) return;
  let rel = el.nextElementSibling;
  if (!rel || !rel.classList.contains('relative')) {
    rel = document.createElement('span');
    rel.className = 'relative';
    el.after(rel);
  }
  const relText = ` (${relativeTime(t)})`;
  if (rel.textContent !== relText) rel.textContent = relText;
}

function renderTimes() {
  for (const el of document.querySelectorAll('time[datetime]')) renderTime(el);
}

function setBoundTime(name, iso) {
  for (const el of document.querySelectorAll(`time[data-bind="${name}"]`)) {
    if (el.getAttribute('datetime') !== iso) el.setAttribute('datetime', iso);
    renderTime(el);
  }
}

function formatCountdown(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const minutes = Math.floor(total / 60);
  const seconds = String(total % 60).padStart(2, '0');
  return `${minutes}:${seconds}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------- API

let queue = Promise.resolve();
let pending = 0;
/** State-changing calls of this tab under way (their checks included), and a check asked for meanwhile. */
let mutating = 0;
let checkAfterMutating = false;

/** Runs API calls of this tab one after another. */
function exclusive(task) {
  pending++;
  const run = queue.then(task);
  queue = run.catch(() => undefined);
  return run.finally(() => {
    pending--;
  });
}

async function request(method, path, payload) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (payload !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(payload);
  }
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  // A timer rather than AbortSignal.timeout(), which some browsers with Web Locks lack: a call
  // that never ends would hold the session-change lock (below) for every tab.
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), REQUEST_TIMEOUT_MS);
  init.signal = deadline.signal;
  try {
    return await send(path, init);
  } finally {
    clearTimeout(timer);
  }
}

async function send(path, init) {
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    // Given up on (REQUEST_TIMEOUT_MS), a call may still be carried out by the server: saying it
    // could not be reached would have the person try again, perhaps over what was done.
    if (init.signal?.aborted) {
      return {
        ok: false,
        status: 0,
        headers: new Headers(),
        data: { error: { code: 'timeout', message: 'Switchboard did not answer in time. What you asked may have been done all the same: reload the page to see, then try again if it was not.' } },
      };
    }
    return {
      ok: false,
      status: 0,
      headers: new Headers(),
      data: { error: { code: 'network_error', message: 'Switchboard could not be reached. Check your connection and try again.' } },
    };
  }
  let data = null;
  if (res.status !== 204) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  }
  noteServerTime(res.headers);
  if (data && typeof data.csrfToken === 'string') setCsrfToken(data.csrfToken);
  return { ok: res.ok, status: res.status, headers: res.headers, data };
}

function setCsrfToken(token) {
  csrfToken = token;
  document.querySelector('meta[name="csrf-token"]')?.setAttribute('content', token);
  for (const input of document.querySelectorAll('input[name="_csrf"]')) input.value = token;
}

const api = (method, path, payload) => exclusive(() => request(method, path, payload));

/**
 * A state-changing call; a stale CSRF token (the session changed under this tab) is refreshed and
 * the call retried once. Counted as pending throughout, its pause before the check included: the
 * background check would otherwise find a new login first and reload the page, and the person
 * would never be told that what they pressed was not done.
 */
async function mutate(method, path, payload) {
  pending++;
  mutating++;
  try {
    return await mutateOnce(method, path, payload);
  } finally {
    pending--;
    mutating--;
    if (mutating === 0 && checkAfterMutating) {
      checkAfterMutating = false;
      void refreshSession();
    }
  }
}

/**
 * A check asked for by another tab's message: after this tab's own state-changing call, whose
 * check then comes first (and says, if the session changed under it, that it was not done).
 */
function checkSoon() {
  if (mutating > 0) checkAfterMutating = true;
  else void refreshSession();
}

async function mutateOnce(method, path, payload) {
  let res = await api(method, path, payload);
  // A cookie rotated by another tab (a password change) can cross this request, which then
  // did nothing: if the session goes on under the new cookie, it is sent once more.
  if (signedInPage && res.status === 401 && res.data?.error?.code === 'unauthenticated') {
    await sleep(250);
    if (stillThisSession(await api('GET', '/api/session?passive=1'))) res = await api(method, path, payload);
  }
  if (signedInPage && res.status === 403 && res.data?.error?.code === 'csrf_failed') {
    if (stillThisSession(await api('GET', '/api/session'))) res = await api(method, path, payload);
  }
  return res;
}

/**
 * Whether the browser's cookie still opens this page's session (the same user, the same session
 * under a rotated id), so that a call may be sent again. Another user logged in meanwhile in
 * another tab, or a new login: the call is not sent again — it would land in that account — and
 * the page starts over as it (applySession).
 */
function stillThisSession(session) {
  if (!session.ok || !session.data?.authenticated) return false;
  applySession(session.data, { callUndone: true });
  return !leaving;
}

function errorOf(res) {
  const error = res.data?.error;
  if (error && typeof error.message === 'string') return error;
  return { code: `http_${res.status}`, message: `Something went wrong (HTTP ${res.status}). Please try again.` };
}

function messageFor(res) {
  const error = errorOf(res);
  if (error.code === 'too_many_attempts') {
    const seconds = Number(res.headers.get('Retry-After'));
    if (seconds > 0) {
      const minutes = Math.ceil(seconds / 60);
      return `Too many failed attempts. Try again in ${seconds < 90 ? `${seconds} seconds` : `${minutes} minutes`}.`;
    }
  }
  return error.message;
}

// ---------------------------------------------------------------- announcements and forms

function announce(message) {
  const el = document.getElementById('announcer');
  if (!el) return;
  el.textContent = '';
  setTimeout(() => {
    el.textContent = message;
  }, 60);
}

function clearErrors(form) {
  for (const el of form.querySelectorAll('[aria-invalid="true"]')) el.removeAttribute('aria-invalid');
  for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
  const formError = document.getElementById(`${form.id}-error`);
  if (formError) formError.textContent = '';
}

/**
 * Puts the API's `error.fields` next to their inputs and anything else above the form.
 * `fieldFor` maps an error code without fields to one field (e.g. a wrong current password).
 */
function showErrors(form, res, fieldFor = {}) {
  const error = errorOf(res);
  const fields = { ...(error.fields && typeof error.fields === 'object' ? error.fields : {}) };
  const mapped = fieldFor[error.code];
  if (mapped && Object.keys(fields).length === 0) fields[mapped.field] = mapped.message ?? error.message;
  const general = [];
  let firstInvalid = null;
  for (const [name, message] of Object.entries(fields)) {
    const input = form.elements.namedItem(name);
    const slot = document.getElementById(`${form.id}-${name}-error`);
    if (input instanceof HTMLInputElement && slot) {
      input.setAttribute('aria-invalid', 'true');
      slot.textContent = String(message);
      firstInvalid ??= input;
    } else {
      general.push(String(message));
    }
  }
  if (Object.keys(fields).length === 0) general.push(messageFor(res));
  const formError = document.getElementById(`${form.id}-error`);
  if (formError && general.length) formError.textContent = general.join(' ');
  // Focus the first invalid field in reading order (the API lists them in its own order).
  if (firstInvalid) form.querySelector('[aria-invalid="true"]')?.focus();
}

function setBusy(form, busy) {
  form.setAttribute('aria-busy', String(busy));
  const button = form.querySelector('button[type="submit"]');
  if (!button) return;
  if (busy) {
    button.dataset.idleLabel = button.textContent;
    if (button.dataset.busyLabel) button.textContent = button.dataset.busyLabel;
    button.setAttribute('aria-disabled', 'true');
  } else {
    if (button.dataset.idleLabel) button.textContent = button.dataset.idleLabel;
    button.removeAttribute('aria-disabled');
  }
}

function value(form, name) {
  const input = form.elements.namedItem(name);
  return input instanceof HTMLInputElement ? input.value : '';
}

/**
 * Calls that change which session this browser's cookie holds — log in, sign up, log out, a
 * password change (which rotates the id) — run one at a time across the browser's tabs (the Web
 * Locks API, where the page is a secure context). A logout that crossed another tab's login left
 * with the old cookie and came back after the login's answer: its Set-Cookie cleared the new
 * cookie, and the new session stayed live on the server, held by nobody, until its idle timeout.
 * One after the other, the second call goes out with the cookie the first one left.
 */
/** A login or signup of this tab waiting for, or holding, the lock; and another tab's login seen meanwhile. */
let ownSessionChange = 0;
let loginElsewhere = false;

function oneSessionChangeAtATime(call) {
  if (!navigator.locks?.request) return call();
  // Bounded: a tab holding the lock gives it up when its call ends (REQUEST_TIMEOUT_MS at most,
  // its check and resend included); past this, the call goes out without it, as before locks.
  const waiting = new AbortController();
  const timer = setTimeout(() => waiting.abort(), LOCK_WAIT_MS);
  return navigator.locks
    .request('switchboard-session-change', { signal: waiting.signal }, () => {
      clearTimeout(timer);
      return call();
    })
    .catch((err) => {
      if (err?.name !== 'AbortError') throw err;
      return call();
    });
}

function handleForm(form, { method = 'POST', path, values, fieldFor, onSuccess, onFailure, changesSession = false }) {
  if (!form) return;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (form.getAttribute('aria-busy') === 'true') return;
    clearErrors(form);
    setBusy(form, true);
    try {
      const payload = values(form);
      if (changesSession) ownSessionChange++;
      let res;
      try {
        res = await (changesSession ? oneSessionChangeAtATime(() => mutate(method, path, payload)) : mutate(method, path, payload));
      } finally {
        if (changesSession) ownSessionChange--;
      }
      if (res.ok) {
        await onSuccess(res, form);
        return;
      }
      onFailure?.(res);
      if (signedInPage && res.status === 401 && res.data?.error?.code === 'unauthenticated') {
        signedOut('ended');
        return;
      }
      showErrors(form, res, fieldFor);
      // Another tab logged in while this one's login was on its way (and was refused): follow it.
      if (!signedInPage && loginElsewhere) location.assign('/');
    } finally {
      setBusy(form, false);
    }
  });
}

// ---------------------------------------------------------------- signed-out pages

function initLogin() {
  let reason = null;
  try {
    reason = sessionStorage.getItem(SIGNED_OUT_KEY);
    sessionStorage.removeItem(SIGNED_OUT_KEY);
    // A call left undone by a session that has since ended: the next login is a new start.
    sessionStorage.removeItem(NOT_DONE_KEY);
  } catch {
    reason = null;
  }
  const notices = {
    logout: 'You have been logged out.',
    expired: 'Your session expired after a period of inactivity. Log in again to continue.',
    maximum: 'Your session reached its maximum length. Log in again to continue.',
    ended: 'Your session was ended (from another device, by a password change or by an administrator). Log in again to continue.',
  };
  const notice = document.getElementById('signed-out-notice');
  if (notice && reason && notices[reason]) notice.textContent = notices[reason];

  const loginForm = document.getElementById('login');
  handleForm(loginForm, {
    path: '/api/login',
    changesSession: true,
    values: (form) => ({ email: value(form, 'email'), password: value(form, 'password') }),
    onFailure: (res) => {
      // Wrong email or password: the password selected, so that typing it again replaces it.
      const password = loginForm?.elements.namedItem('password');
      if (res.data?.error?.code === 'invalid_credentials' && password instanceof HTMLInputElement) {
        password.focus();
        password.select();
      }
    },
    onSuccess: (res) => {
      channel?.postMessage({ type: 'login', userId: res.data?.user?.id });
      location.assign('/');
    },
  });
}

function initSignup() {
  handleForm(document.getElementById('signup'), {
    path: '/api/signup',
    changesSession: true,
    values: (form) => ({ name: value(form, 'name'), email: value(form, 'email'), password: value(form, 'password') }),
    fieldFor: { email_taken: { field: 'email' } },
    onSuccess: (res) => {
      channel?.postMessage({ type: 'login', userId: res.data?.user?.id });
      location.assign('/');
    },
  });
}

// ---------------------------------------------------------------- the signed-in session

const state = {
  userId: Number(body.dataset.userId),
  handle: body.dataset.handle || null,
  platformId: body.dataset.platformId ? Number(body.dataset.platformId) : null,
  backend: null,
  expiresAt: Number.NaN,
  lastActivity: Number.NaN,
  /** When the session ends however active the user is (SESSION_ABSOLUTE_TIMEOUT). */
  absoluteExpiresAt: Number(body.dataset.absoluteExpiresAt),
  /** The session ends at that cap: its expiry is the cap, not an idle timeout. */
  capped: false,
};

/** Why the session is ending or ended, in the words the login page and the warning use. */
const endReason = () => (state.capped ? 'maximum' : 'expired');
/**
 * Why a session the server no longer knows ended: its own time if that has come (a moment's
 * grace for clocks), otherwise someone ended it — another device, a password change, an
 * administrator — even while this tab's idle warning was showing.
 */
const lostReason = () => (Number.isFinite(state.expiresAt) && serverNow() >= state.expiresAt - 1500 ? endReason() : 'ended');
let leaving = false;

/** This tab's session is gone: go to /login, which says why. */
function signedOut(reason) {
  if (leaving) return;
  leaving = true;
  try {
    sessionStorage.setItem(SIGNED_OUT_KEY, reason);
  } catch {
    // private mode: the login page just shows no notice
  }
  location.replace('/login');
}

/** Reads /api/session and brings the page up to date; 401 (asked twice) means logged out. */
async function refreshSession() {
  if (leaving) return;
  // passive=1: a background check is not user activity, so it does not keep the session alive.
  let res = await api('GET', '/api/session?passive=1');
  if (res.status === 401) {
    // A cookie rotated by another tab (password change) can cross this request: ask once more.
    await sleep(250);
    res = await api('GET', '/api/session?passive=1');
  }
  if (res.status === 401) {
    signedOut(lostReason());
    return;
  }
  if (res.ok && res.data?.authenticated) applySession(res.data);
}

let polling = false;
/** Set while another tab changes the password: a check sent with the old cookie then would end this browser's session. */
let pausedUntil = 0;
/** The background check: skipped while this tab is busy with its own calls, paused, or hidden. */
async function poll() {
  if (leaving || polling || pending > 0 || Date.now() < pausedUntil || document.visibilityState !== 'visible') return;
  polling = true;
  try {
    await refreshSession();
  } finally {
    polling = false;
  }
}

function applySession(data, { callUndone = false } = {}) {
  const session = data.session;
  // Another user, or a new login of this user, now owns this browser's cookie: start over.
  if (data.user?.id !== state.userId || (state.handle && session.handle !== state.handle)) {
    leaving = true;
    if (callUndone) {
      try {
        history.scrollRestoration = 'manual';
        sessionStorage.setItem(NOT_DONE_KEY, '1');
      } catch {
        // private mode: the page starts over without the notice
      }
    }
    location.reload();
    return;
  }
  state.handle = session.handle;
  state.expiresAt = Date.parse(session.expiresAt);
  state.lastActivity = Date.parse(session.lastActivity);
  if (state.expiresAt >= state.absoluteExpiresAt - 1000) state.capped = true;
  if (session.backend !== state.backend) {
    state.backend = session.backend;
    for (const el of document.querySelectorAll('[data-bind="backend"]')) {
      el.dataset.backend = session.backend;
      el.textContent = BACKEND_LABELS[session.backend] ?? session.backend;
    }
  }
  setBoundTime('lastActivity', session.lastActivity);
  setBoundTime('expiresAt', session.expiresAt);
  const platform = data.platform && typeof data.platform.id === 'number' ? data.platform : null;
  if ((platform?.id ?? null) !== state.platformId) {
    state.platformId = platform?.id ?? null;
    platformChanged(platform);
  }
  updateIdleWarning();
}

// ---------------------------------------------------------------- idle-expiry warning

const warning = document.getElementById('idle-warning');
const countdown = document.getElementById('idle-countdown');
const warningNote = document.getElementById('idle-warning-note');

/** How long before expiry to warn: half the idle timeout, between 10 s and 2 min. */
function warningLead() {
  const idle = state.expiresAt - state.lastActivity;
  return Math.min(120_000, Math.max(10_000, idle / 2));
}

function updateIdleWarning() {
  if (!warning || !Number.isFinite(state.expiresAt)) return;
  const remaining = state.expiresAt - serverNow();
  if (remaining > warningLead()) {
    if (!warning.hidden) {
      warning.hidden = true;
      if (warningNote) warningNote.textContent = '';
    }
    return;
  }
  if (countdown) countdown.textContent = formatCountdown(remaining);
  const reason = document.getElementById('idle-warning-reason');
  if (reason) reason.textContent = state.capped ? 'because the session has reached its maximum length: save your work, then log in again' : 'because of inactivity';
  if (warning.hidden) {
    warning.hidden = false;
    announce(
      state.capped
        ? `You will be logged out in ${formatCountdown(remaining)}: the session has reached its maximum length. Save your work, then log in again.`
        : `You will be logged out in ${formatCountdown(remaining)} because of inactivity. Choose Stay signed in to continue.`,
    );
  }
}

async function staySignedIn(button) {
  if (button.getAttribute('aria-disabled') === 'true') return;
  button.setAttribute('aria-disabled', 'true');
  const before = state.expiresAt;
  try {
    const res = await mutate('PATCH', '/api/session', { preferences: { lastSeen: Date.now() } });
    if (res.status === 401) {
      signedOut(lostReason());
      return;
    }
    if (!res.ok) {
      if (warningNote) warningNote.textContent = messageFor(res);
      return;
    }
    await refreshSession();
    channel?.postMessage({ type: 'activity' });
    if (state.expiresAt > before + 1000) {
      warning.hidden = true;
      announce('You are still signed in.');
    } else {
      state.capped = true;
      updateIdleWarning();
      if (warningNote) warningNote.textContent = `Your session could not be extended. It ends at ${timeFormat.format(state.expiresAt)}: save your work, then log in again.`;
    }
  } finally {
    button.removeAttribute('aria-disabled');
  }
}

// ---------------------------------------------------------------- dashboard

const platformList = document.getElementById('platform-list');
const platformTemplate = document.getElementById('platform-row-template');

function renderActivePlatform(platform) {
  for (const el of document.querySelectorAll('[data-bind="platform"]')) el.textContent = platform ? platform.name : 'None';
  if (!platformList) return;
  for (const row of platformList.querySelectorAll('li.platform')) {
    row.toggleAttribute('data-active', platform !== null && row.dataset.platformId === String(platform.id));
  }
}

function fillPlatformRow(row, p) {
  row.dataset.platformId = String(p.id);
  row.toggleAttribute('data-active', Boolean(p.active));
  row.querySelector('.platform-icon').textContent = p.name.slice(0, 1).toUpperCase();
  const name = row.querySelector('.platform-name');
  name.textContent = p.name;
  // Cut short with an ellipsis on narrow screens: the whole name on hover.
  name.title = p.name;
  row.querySelector('.platform-type').textContent = p.type;
  const button = row.querySelector('button[data-action="activate"]');
  button.dataset.id = String(p.id);
  button.setAttribute('formaction', `/api/platforms/${p.id}/activate`);
  button.setAttribute('aria-label', `Switch to ${p.name}`);
}

/** Brings the list in line with the API's, keeping existing rows (and the focus in them). */
function renderPlatforms(platforms) {
  if (!platformList || !platformTemplate) return;
  const rows = new Map([...platformList.querySelectorAll('li.platform')].map((row) => [row.dataset.platformId, row]));
  let previous = null;
  for (const p of platforms) {
    let row = rows.get(String(p.id));
    rows.delete(String(p.id));
    if (!row) row = platformTemplate.content.firstElementChild.cloneNode(true);
    fillPlatformRow(row, p);
    if (previous ? previous.nextElementSibling !== row : platformList.firstElementChild !== row) {
      if (previous) previous.after(row);
      else platformList.prepend(row);
    }
    previous = row;
  }
  for (const row of rows.values()) row.remove();
  const empty = document.getElementById('platform-empty');
  if (empty) empty.hidden = platforms.length > 0;
  const active = platforms.find((p) => p.active) ?? null;
  for (const el of document.querySelectorAll('[data-bind="platform"]')) el.textContent = active ? active.name : 'None';
}

async function refreshPlatforms() {
  const res = await api('GET', '/api/platforms');
  if (res.ok && Array.isArray(res.data?.platforms)) renderPlatforms(res.data.platforms);
}

/** The session's platform changed (here, in another tab or on another device). */
function platformChanged(platform) {
  if (page !== 'dashboard') return;
  renderActivePlatform(platform);
  void refreshPlatforms();
}

async function activatePlatform(button) {
  if (button.getAttribute('aria-disabled') === 'true') return;
  button.setAttribute('aria-disabled', 'true');
  try {
    const res = await mutate('POST', `/api/platforms/${encodeURIComponent(button.dataset.id ?? '')}/activate`);
    if (res.status === 401) {
      signedOut('ended');
      return;
    }
    if (!res.ok) {
      announce(messageFor(res));
      await refreshPlatforms();
      return;
    }
    const platform = res.data.platform;
    state.platformId = platform.id;
    renderActivePlatform(platform);
    channel?.postMessage({ type: 'platform', platform });
    announce(`Switched to ${platform.name}.`);
    platformList?.querySelector(`li.platform[data-platform-id="${platform.id}"]`)?.focus();
  } finally {
    button.removeAttribute('aria-disabled');
  }
}

function initDashboard() {
  platformList?.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action="activate"]');
    if (!button) return;
    // The button also submits a form, for browsers without JavaScript: here, fetch does it.
    event.preventDefault();
    void activatePlatform(button);
  });
  const form = document.getElementById('add-platform');
  handleForm(form, {
    path: '/api/platforms',
    values: (f) => ({ name: value(f, 'name'), type: value(f, 'type') }),
    onSuccess: async (res, f) => {
      f.reset();
      await refreshPlatforms();
      channel?.postMessage({ type: 'platforms' });
      announce(`Added ${res.data.platform.name}.`);
      f.elements.namedItem('name')?.focus();
    },
  });
}

// ---------------------------------------------------------------- sessions page

function updateSessionCount() {
  const rows = document.querySelectorAll('#session-list > li.session');
  const caption = document.getElementById('session-count');
  if (caption) caption.textContent = `${rows.length} active ${rows.length === 1 ? 'session' : 'sessions'}`;
  const others = document.querySelectorAll('#session-list > li.session:not([data-current])').length;
  const revokeOthers = document.querySelector('button[data-action="revoke-others"]');
  if (revokeOthers) revokeOthers.disabled = others === 0;
}

function sessionStatus(message) {
  const status = document.getElementById('sessions-status');
  if (status) status.textContent = message;
}

async function revokeSession(button) {
  if (button.getAttribute('aria-disabled') === 'true') return;
  button.setAttribute('aria-disabled', 'true');
  const row = button.closest('li.session');
  const res = await mutate('DELETE', `/api/sessions/${encodeURIComponent(button.dataset.handle ?? '')}`);
  button.removeAttribute('aria-disabled');
  if (res.status === 401) {
    signedOut('ended');
    return;
  }
  if (!res.ok && res.status !== 404) {
    sessionStatus(messageFor(res));
    return;
  }
  const next = row?.nextElementSibling?.querySelector('button') ?? row?.previousElementSibling?.querySelector('button');
  row?.remove();
  updateSessionCount();
  channel?.postMessage({ type: 'sessions' });
  sessionStatus(res.status === 404 ? 'That session had already ended.' : 'Session revoked. That device is logged out.');
  (next ?? document.querySelector('h1'))?.focus?.();
}

async function revokeOthers(button) {
  if (button.disabled) return;
  button.disabled = true;
  const res = await mutate('POST', '/api/sessions/revoke-others');
  if (res.status === 401) {
    signedOut('ended');
    return;
  }
  if (!res.ok) {
    button.disabled = false;
    sessionStatus(messageFor(res));
    return;
  }
  for (const row of document.querySelectorAll('#session-list > li.session:not([data-current])')) row.remove();
  updateSessionCount();
  channel?.postMessage({ type: 'sessions' });
  const n = Number(res.data?.revoked ?? 0);
  sessionStatus(n === 1 ? 'Logged out 1 other session.' : `Logged out ${n} other sessions.`);
}

/**
 * The list as the server renders it now: a login on another device, or a revoke from another
 * tab, shows here without a reload. A background check (`passive=1`: not activity); skipped
 * while the user is working in the list, so that focus and a pending revoke are left alone.
 */
async function refreshSessionList() {
  const list = document.getElementById('session-list');
  if (!list || document.visibilityState !== 'visible' || list.contains(document.activeElement) || list.querySelector('[aria-disabled="true"]')) return;
  let res;
  try {
    res = await fetch('/sessions?passive=1', { headers: { Accept: 'text/html' }, credentials: 'same-origin', cache: 'no-store', redirect: 'manual' });
  } catch {
    return;
  }
  if (res.status !== 200) return; // signed out, or a redirect to /login: the session poll handles it
  const fresh = new DOMParser().parseFromString(await res.text(), 'text/html').getElementById('session-list');
  if (!fresh || list.contains(document.activeElement)) return;
  list.replaceChildren(...[...fresh.children].map((child) => document.importNode(child, true)));
  renderTimes();
  updateSessionCount();
}

function initSessions() {
  document.getElementById('session-list')?.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action="revoke"]');
    if (!button) return;
    event.preventDefault();
    void revokeSession(button);
  });
  const others = document.querySelector('button[data-action="revoke-others"]');
  others?.addEventListener('click', (event) => {
    event.preventDefault();
    void revokeOthers(others);
  });
  setInterval(() => void refreshSessionList(), SESSION_LIST_MS);
  document.addEventListener('visibilitychange', () => void refreshSessionList());
}

// ---------------------------------------------------------------- account page

function initAccount() {
  const form = document.getElementById('password');
  const status = document.getElementById('password-status');
  handleForm(form, {
    path: '/api/password',
    changesSession: true,
    values: (f) => {
      // The change rotates the cookie: the other tabs hold their checks until it is done.
      channel?.postMessage({ type: 'password-changing' });
      return { currentPassword: value(f, 'currentPassword'), newPassword: value(f, 'newPassword') };
    },
    fieldFor: { invalid_credentials: { field: 'currentPassword', message: 'Your current password is not correct.' } },
    onFailure: () => channel?.postMessage({ type: 'password-unchanged' }),
    onSuccess: async (_res, f) => {
      f.reset();
      for (const input of f.querySelectorAll('input[data-revealed]')) {
        input.type = 'password';
        input.removeAttribute('data-revealed');
      }
      if (status) status.textContent = 'Your password has been changed. You are still logged in here; every other device has been logged out.';
      // Other tabs of this browser share the new cookie: they only need to look again.
      channel?.postMessage({ type: 'password' });
      await refreshSession();
    },
  });
  form?.addEventListener('input', () => {
    if (status) status.textContent = '';
  });
  const toggle = document.querySelector('input[data-action="show-passwords"]');
  toggle?.addEventListener('change', () => {
    for (const name of ['currentPassword', 'newPassword']) {
      const input = form?.elements.namedItem(name);
      if (!(input instanceof HTMLInputElement)) continue;
      input.type = toggle.checked ? 'text' : 'password';
      input.toggleAttribute('data-revealed', toggle.checked);
    }
  });
}

// ---------------------------------------------------------------- wiring

let loggingOut = false;

async function logout() {
  // Pressed again while it waits (for another tab's login or password change, say): one logout.
  if (loggingOut) return;
  loggingOut = true;
  const buttons = [...document.querySelectorAll('form.logout-form button, button[data-action="logout"]')];
  for (const button of buttons) button.setAttribute('aria-disabled', 'true');
  try {
    const res = await oneSessionChangeAtATime(() => mutate('POST', '/api/logout'));
    if (res.status === 0) {
      // No answer from the network: let the browser try the plain form post (POST /logout).
      document.querySelector('form.logout-form')?.submit();
      return;
    }
    const failure = document.getElementById('logout-error');
    // 401: the session had already ended; this browser is logged out either way. Anything else
    // (503 while a backend is down): the session goes on, and the user must not think otherwise.
    if (!res.ok && res.status !== 401) {
      if (failure) failure.textContent = `Could not log out: ${messageFor(res)}`;
      return;
    }
    if (failure) failure.textContent = '';
    channel?.postMessage({ type: 'logout' });
    signedOut('logout');
  } finally {
    loggingOut = false;
    for (const button of buttons) button.removeAttribute('aria-disabled');
  }
}

function initSignedIn() {
  let undone = null;
  try {
    undone = sessionStorage.getItem(NOT_DONE_KEY);
    sessionStorage.removeItem(NOT_DONE_KEY);
  } catch {
    undone = null;
  }
  const notice = document.getElementById('page-notice');
  if (undone && notice) {
    notice.textContent = 'This browser was logged in again in another tab, so what you just did was not done. This page now shows that session: check it, then try again.';
    notice.hidden = false;
    // The reload kept the scroll position (under the sticky top bar, or far below on a phone):
    // the notice is brought into view and focused, which also has screen readers read it.
    notice.tabIndex = -1;
    notice.focus({ preventScroll: true });
    window.scrollTo(0, 0);
    // The reload asked for no scroll restoration (applySession), which the browser reads after
    // the load event: back to the default when the page is left.
    window.addEventListener(
      'pagehide',
      () => {
        try {
          history.scrollRestoration = 'auto';
        } catch {
          // not supported: nothing to undo
        }
      },
      { once: true },
    );
  }
  document.addEventListener('submit', (event) => {
    if (!event.target.classList?.contains('logout-form')) return;
    event.preventDefault();
    void logout();
  });
  document.addEventListener('click', (event) => {
    const stay = event.target.closest?.('button[data-action="stay-signed-in"]');
    if (stay) void staySignedIn(stay);
    if (event.target.closest?.('button[data-action="logout"]')) {
      event.preventDefault();
      void logout();
    }
  });

  setInterval(() => {
    void poll();
    updateIdleWarning();
  }, POLL_MS);
  setInterval(renderTimes, 15_000);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') void poll();
  });
  window.addEventListener('pageshow', (event) => {
    if (event.persisted) void refreshSession();
  });
  window.addEventListener('online', () => void poll());
  void refreshSession();
}

channel?.addEventListener('message', (event) => {
  const message = event.data && typeof event.data === 'object' ? event.data : {};
  if (!signedInPage) {
    // This tab's own login is waiting for the lock or on its way: navigating now would cancel it
    // after the server took it (its new session then held by nobody, the first login's ended).
    if (message.type === 'login' && ownSessionChange > 0) loginElsewhere = true;
    else if (message.type === 'login') location.assign('/');
    return;
  }
  switch (message.type) {
    case 'logout':
      signedOut('logout');
      break;
    case 'password-changing':
      pausedUntil = Date.now() + 5000;
      break;
    case 'password-unchanged':
      pausedUntil = 0;
      break;
    case 'password':
      pausedUntil = 0;
      checkSoon();
      break;
    case 'login':
    case 'activity':
      checkSoon();
      break;
    case 'platform':
      if (message.platform && typeof message.platform.id === 'number') {
        state.platformId = message.platform.id;
        platformChanged(message.platform);
      }
      checkSoon();
      break;
    case 'platforms':
      if (page === 'dashboard') void refreshPlatforms();
      break;
    case 'sessions':
      if (page === 'sessions') void refreshSessionList();
      break;
    default:
      break;
  }
});

renderTimes();
if (signedInPage) initSignedIn();
if (page === 'login') initLogin();
if (page === 'signup') initSignup();
if (page === 'dashboard') initDashboard();
if (page === 'sessions') initSessions();
if (page === 'account') initAccount();
