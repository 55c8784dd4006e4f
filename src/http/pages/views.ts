/** The pages' markup: one function per page, returning the whole HTML document. */
import type { BackendName } from '../../config/config.js';
import type { Assets } from './assets.js';
import { describeDevice, isMobile } from './device.js';
import type { FormFlash } from './form-flash.js';
import { html, raw } from './html.js';
import { backendBadge, field, formError, layout, time, type FieldOptions, type Viewer } from './layout.js';

export interface PlatformView {
  id: number;
  name: string;
  type: string;
  active: boolean;
}

export interface SessionView {
  handle: string;
  backend: BackendName;
  createdAt: number;
  lastActivity: number;
  expiresAt: number;
  ip: string;
  userAgent: string;
  current: boolean;
}

const DEVICE_ICONS = {
  desktop: raw('<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round" focusable="false"><rect x="3" y="4" width="18" height="12" rx="2"/><path d="M8 20h8M12 16v4"/></svg>'),
  mobile: raw('<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round" focusable="false"><rect x="7" y="2.5" width="10" height="19" rx="2.5"/><path d="M11 18.5h2"/></svg>'),
};

const PLATFORM_TYPES = ['Slack', 'GitHub', 'Jira', 'Linear', 'Discord', 'Teams', 'Zendesk'];

/**
 * What a form posted without JavaScript failed with (form-navigation.ts brings back only the
 * error's code, in `?error=`): a sentence for the codes the forms' routes answer, a general one
 * for any other value. Nothing from the address is shown as it is.
 */
const FORM_ERRORS: Readonly<Record<string, string>> = {
  invalid_credentials: 'Email or password is incorrect.',
  too_many_attempts: 'Too many failed attempts. Wait a few minutes, then try again.',
  email_taken: 'An account with this email already exists.',
  invalid_input: 'Some of the fields are not valid. Check them and try again.',
  csrf_failed: 'This page had expired. Try again.',
  unauthenticated: 'You were logged out. Log in and try again.',
  service_unavailable: 'The service is unavailable for a moment. Try again shortly.',
};

/**
 * What is said above a form: the API's sentence for a refusal that is no field's (`error.fields._`,
 * e.g. the platform limit), as app.js says it with JavaScript; else the sentence for the error's code.
 */
function aboveFields(flash: FormFlash | undefined, code: string | undefined): string {
  return flash?.fields._ ?? formErrorMessage(code);
}

/** The error is under its field (the form's flash, right after the post): not said again above the form, as with JavaScript. */
function saidOnField(flash: FormFlash | undefined): boolean {
  return Object.keys(flash?.fields ?? {}).length > 0;
}

function formErrorMessage(code: string | undefined): string {
  if (code === undefined) return '';
  return Object.hasOwn(FORM_ERRORS, code) ? FORM_ERRORS[code]! : 'That did not work. Try again.';
}

/**
 * A form's fields, with what a refused post without JavaScript brought back (`flash`): each
 * field's sentence, what was typed, and the focus on the first refused field.
 */
function fields(flash: FormFlash | undefined, list: FieldOptions[]) {
  const firstRefused = list.find((o) => flash?.fields[o.name] !== undefined)?.name;
  return list.map((o) => field({ ...o, value: flash?.values[o.name] ?? o.value, error: flash?.fields[o.name], autofocus: o.name === firstRefused }));
}

/** What /login says when a person arrives from logging out without JavaScript (app.js says the same, and more, with it). */
const SIGNED_OUT: Readonly<Record<string, string>> = {
  logout: 'You have been logged out.',
};

export function loginPage(assets: Assets, error?: string, flash?: FormFlash, signedOut?: string): string {
  return layout({
    page: 'login',
    title: 'Log in',
    assets,
    body: html`<h1>Log in</h1>
<p class="lede">Welcome back. Enter your details to continue.</p>
<p class="notice" id="signed-out-notice" role="status" aria-live="polite">${signedOut !== undefined && Object.hasOwn(SIGNED_OUT, signedOut) ? SIGNED_OUT[signedOut] : ''}</p>
${formError('login', formErrorMessage(error))}
<form id="login" class="form" method="post" action="/api/login" novalidate data-form="login">
  ${fields(flash, [
    { form: 'login', name: 'email', label: 'Email', type: 'email', autocomplete: 'username', inputmode: 'email', maxlength: 254 },
    { form: 'login', name: 'password', label: 'Password', type: 'password', autocomplete: 'current-password', maxlength: 1024 },
  ])}
  <button class="btn btn-primary btn-block" type="submit" data-busy-label="Logging in…">Log in</button>
</form>
<p class="auth-switch">New to Switchboard? <a href="/signup">Create an account</a></p>`,
  });
}

export function signupPage(assets: Assets, minPasswordLength: number, error?: string, flash?: FormFlash): string {
  return layout({
    page: 'signup',
    title: 'Create an account',
    assets,
    body: html`<h1>Create your account</h1>
<p class="lede">One login for every platform you connect.</p>
${formError('signup', error === 'email_taken' && saidOnField(flash) ? '' : formErrorMessage(error))}
<form id="signup" class="form" method="post" action="/api/signup" novalidate data-form="signup">
  ${fields(flash, [
    { form: 'signup', name: 'name', label: 'Name', autocomplete: 'name', maxlength: 100 },
    { form: 'signup', name: 'email', label: 'Email', type: 'email', autocomplete: 'email', inputmode: 'email', maxlength: 254 },
    { form: 'signup', name: 'password', label: 'Password', type: 'password', autocomplete: 'new-password', hint: `At least ${minPasswordLength} characters. A long passphrase is best.`, maxlength: 1024 },
  ])}
  <button class="btn btn-primary btn-block" type="submit" data-busy-label="Creating account…">Create account</button>
</form>
<p class="auth-switch">Already have an account? <a href="/login">Log in</a></p>`,
  });
}

/** Where a platform's Switch button posts its form when JavaScript is off (app.js sends the same). */
const activatePath = (id: number) => `/api/platforms/${id}/activate`;

/** One platform row; also rendered empty into a <template> that app.js clones for new rows. */
export function platformRow(p: PlatformView | undefined) {
  return html`<li class="platform" tabindex="-1" data-platform-id="${p?.id ?? ''}"${p?.active ? html` data-active` : ''}>
  <span class="platform-icon" aria-hidden="true">${(p?.name ?? '').slice(0, 1).toUpperCase()}</span>
  <span class="platform-text"><span class="platform-name" title="${p?.name ?? ''}">${p?.name ?? ''}</span><span class="platform-type">${p?.type ?? ''}</span></span>
  <span class="badge badge-active platform-active">Active</span>
  <button class="btn btn-secondary btn-sm platform-switch" type="submit" formaction="${p ? activatePath(p.id) : ''}" data-action="activate" data-id="${p?.id ?? ''}" aria-label="${p ? `Switch to ${p.name}` : ''}">Switch</button>
</li>`;
}

export function dashboardPage(assets: Assets, d: { viewer: Viewer; session: SessionView; platform: { id: number; name: string; type: string } | null; platforms: PlatformView[]; error?: string; switchError?: string; logoutError?: string; flash?: FormFlash }): string {
  const { viewer, session, platform, platforms } = d;
  const firstName = viewer.user.name.split(/\s+/)[0] || viewer.user.name;
  return layout({
    page: 'dashboard',
    title: 'Dashboard',
    assets,
    viewer,
    logoutError: formErrorMessage(d.logoutError),
    body: html`<div class="page-head">
  <h1>Hello, ${firstName}</h1>
  <p class="lede">Here is your session and the platform you are working in.</p>
</div>
<div class="grid">
  <section class="card" aria-labelledby="session-heading">
    <h2 id="session-heading">Your session</h2>
    <dl class="facts">
      <div><dt>Signed in as</dt><dd><span class="strong">${viewer.user.name}</span><span class="muted block">${viewer.user.email}</span></dd></div>
      <div><dt>Session stored in</dt><dd>${backendBadge(session.backend, true)}</dd></div>
      <div><dt>Signed in since</dt><dd>${time(session.createdAt, { bind: 'createdAt' })}</dd></div>
      <div><dt>Last active</dt><dd>${time(session.lastActivity, { bind: 'lastActivity', relative: true })}</dd></div>
      <div><dt>Expires if idle</dt><dd>${time(session.expiresAt, { bind: 'expiresAt', relative: true })}</dd></div>
    </dl>
    <p class="card-foot"><a class="link-arrow" href="/sessions">See all your sessions</a></p>
  </section>

  <section class="card" aria-labelledby="platforms-heading">
    <h2 id="platforms-heading">Platforms</h2>
    <p class="active-platform">Active platform: <strong data-bind="platform">${platform ? platform.name : 'None'}</strong></p>
    ${formError('switch-platform', d.switchError === 'not_found' ? 'That platform no longer exists.' : formErrorMessage(d.switchError))}
    <!-- Without JavaScript, each Switch button posts this form to its platform (formaction). -->
    <form id="switch-platform" method="post">
      <input type="hidden" name="_csrf" value="${viewer.csrfToken}">
      <ul class="platform-list" id="platform-list" aria-labelledby="platforms-heading">
        ${platforms.map((p) => platformRow(p))}
      </ul>
    </form>
    <p class="empty" id="platform-empty"${platforms.length ? html` hidden` : ''}>No platforms yet. Add your first one below.</p>
    <template id="platform-row-template">${platformRow(undefined)}</template>

    <h3 class="subhead" id="add-platform-heading">Add a platform</h3>
    ${formError('add-platform', aboveFields(d.flash, d.error))}
    <form id="add-platform" class="form form-inline" method="post" action="/api/platforms" novalidate data-form="add-platform" aria-labelledby="add-platform-heading">
      <input type="hidden" name="_csrf" value="${viewer.csrfToken}">
      ${fields(d.flash, [
        { form: 'add-platform', name: 'name', label: 'Name', autocomplete: 'off', maxlength: 100 },
        { form: 'add-platform', name: 'type', label: 'Type', autocomplete: 'off', maxlength: 40, list: 'platform-types' },
      ])}
      <datalist id="platform-types">${PLATFORM_TYPES.map((t) => html`<option value="${t}"></option>`)}</datalist>
      <button class="btn btn-primary" type="submit" data-busy-label="Adding…">Add platform</button>
    </form>
  </section>
</div>`,
  });
}

function sessionItem(s: SessionView) {
  const device = describeDevice(s.userAgent);
  return html`<li class="session${s.current ? ' session-current' : ''}" data-handle="${s.handle}"${s.current ? html` data-current` : ''}>
  <div class="session-device">
    <span class="device-icon" aria-hidden="true">${DEVICE_ICONS[isMobile(s.userAgent) ? 'mobile' : 'desktop']}</span>
    <div class="session-title-wrap">
      <h3 class="session-title">${device}${s.current ? html` <span class="badge badge-current">This device</span>` : ''}</h3>
      <p class="session-ua" title="${s.userAgent}">${s.userAgent || 'No user agent'}</p>
    </div>
  </div>
  <dl class="session-meta">
    <div><dt>IP address</dt><dd>${s.ip || 'unknown'}</dd></div>
    <div><dt>Signed in</dt><dd>${time(s.createdAt)}</dd></div>
    <div><dt>Last active</dt><dd>${time(s.lastActivity, { relative: true })}</dd></div>
    <div><dt>Stored in</dt><dd>${backendBadge(s.backend)}</dd></div>
  </dl>
  <div class="session-actions">
    ${s.current
      ? html`<button class="btn btn-secondary btn-sm" type="submit" form="session-actions" formaction="/logout" data-action="logout" aria-label="Log out of this device">Log out</button>`
      : html`<button class="btn btn-danger-outline btn-sm" type="submit" form="session-actions" formaction="/api/sessions/${encodeURIComponent(s.handle)}/revoke" data-action="revoke" data-handle="${s.handle}" aria-label="${`Revoke ${device}, ${s.ip || 'unknown address'}`}">Revoke</button>`}
  </div>
</li>`;
}

/** What the sessions page says after a revoke posted without JavaScript (form-navigation.ts). */
const REVOKED: Readonly<Record<string, string>> = {
  one: 'Session revoked. That device is logged out.',
  others: 'Logged out every other session.',
};

export function sessionsPage(assets: Assets, d: { viewer: Viewer; sessions: SessionView[]; revoked?: string; error?: string }): string {
  const others = d.sessions.filter((s) => !s.current).length;
  const status =
    d.error === 'not_found' ? 'That session had already ended.' : d.error !== undefined ? formErrorMessage(d.error) : d.revoked !== undefined && Object.hasOwn(REVOKED, d.revoked) ? REVOKED[d.revoked]! : '';
  return layout({
    page: 'sessions',
    title: 'Sessions',
    assets,
    viewer: d.viewer,
    body: html`<div class="page-head page-head-row">
  <div>
    <h1>Sessions</h1>
    <p class="lede">Everywhere you are logged in. Revoke any session you do not recognise.</p>
  </div>
  <button class="btn btn-danger-outline" type="submit" form="session-actions" formaction="/api/sessions/revoke-others" data-action="revoke-others"${others ? '' : html` disabled`}>Log out all other sessions</button>
</div>
<p class="notice" id="sessions-status" role="status" aria-live="polite">${status}</p>
<!-- Without JavaScript, each button posts this form to its action (formaction). -->
<form id="session-actions" method="post">
  <input type="hidden" name="_csrf" value="${d.viewer.csrfToken}">
</form>
<section class="card card-flush" aria-labelledby="sessions-heading">
  <h2 class="visually-hidden" id="sessions-heading">Active sessions</h2>
  <p class="card-caption" id="session-count">${d.sessions.length} active ${d.sessions.length === 1 ? 'session' : 'sessions'}</p>
  <ul class="session-list" id="session-list">
    ${d.sessions.map(sessionItem)}
  </ul>
</section>`,
  });
}

export function accountPage(assets: Assets, d: { viewer: Viewer; minPasswordLength: number; error?: string; changed?: boolean; flash?: FormFlash }): string {
  const { viewer } = d;
  return layout({
    page: 'account',
    title: 'Account',
    assets,
    viewer,
    body: html`<div class="page-head">
  <h1>Account</h1>
  <p class="lede">Your profile and password.</p>
</div>
<div class="grid grid-narrow">
  <section class="card" aria-labelledby="profile-heading">
    <h2 id="profile-heading">Profile</h2>
    <dl class="facts">
      <div><dt>Name</dt><dd>${viewer.user.name}</dd></div>
      <div><dt>Email</dt><dd>${viewer.user.email}</dd></div>
    </dl>
  </section>
  <section class="card" aria-labelledby="password-heading">
    <h2 id="password-heading">Change password</h2>
    <p class="muted">You stay logged in here. Every other device is logged out.</p>
    <p class="notice notice-success" id="password-status" role="status" aria-live="polite">${d.changed ? 'Password changed. Every other device has been logged out.' : ''}</p>
    ${formError('password', d.error === 'invalid_credentials' ? (saidOnField(d.flash) ? '' : 'Your current password is incorrect.') : formErrorMessage(d.error))}
    <form id="password" class="form" method="post" action="/api/password" novalidate data-form="password" aria-labelledby="password-heading">
      <input type="hidden" name="_csrf" value="${viewer.csrfToken}">
      <!-- For password managers only (autocomplete), so it has no name and is never sent. -->
      <input type="email" autocomplete="username" value="${viewer.user.email}" hidden readonly>
      ${fields(d.flash, [
        { form: 'password', name: 'currentPassword', label: 'Current password', type: 'password', autocomplete: 'current-password', maxlength: 1024 },
        { form: 'password', name: 'newPassword', label: 'New password', type: 'password', autocomplete: 'new-password', hint: `At least ${d.minPasswordLength} characters. Avoid common passwords and your name or email.`, maxlength: 1024 },
      ])}
      <div class="checkbox">
        <input type="checkbox" id="password-show" data-action="show-passwords">
        <label for="password-show">Show passwords</label>
      </div>
      <button class="btn btn-primary" type="submit" data-busy-label="Changing password…">Change password</button>
    </form>
  </section>
</div>`,
  });
}

/** What a browser shows for an address no page has (navigation-errors.ts); the API's JSON is for programs. */
export function notFoundPage(assets: Assets): string {
  return layout({
    page: 'not-found',
    title: 'Page not found',
    assets,
    body: html`<h1>Page not found</h1>
<p class="lede">There is no page at this address. It may have moved, or the link may be mistyped.</p>
<p class="auth-switch"><a href="/">Go to your dashboard</a></p>`,
  });
}

/** A page opened while what it needs is down (a 503): the person is still signed in, and told so. */
export function unavailablePage(assets: Assets): string {
  return layout({
    page: 'unavailable',
    title: 'Unavailable for a moment',
    assets,
    body: html`<h1>Unavailable for a moment</h1>
<p class="lede">This page cannot be shown right now. You are still signed in, and nothing you saved is lost.</p>
<p class="auth-switch"><a href="">Try again</a></p>`,
  });
}
