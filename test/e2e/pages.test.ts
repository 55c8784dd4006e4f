/** The page building blocks, without a browser: escaping, asset lookup, device names. */
import { expect } from 'chai';
import path from 'node:path';
import { Assets, findAssetsDir } from '../../src/http/pages/assets.js';
import { describeDevice } from '../../src/http/pages/device.js';
import { escapeHtml, html, raw } from '../../src/http/pages/html.js';
import { field, initials } from '../../src/http/pages/layout.js';
import { ROOT, UA } from './browser-support.js';

describe('pages: building blocks', () => {
  describe('html``', () => {
    it('escapes interpolated text for element content and quoted attributes', () => {
      const evil = `<script>alert("x")</script>' onload='x' \`&amp;`;
      const out = html`<p title="${evil}">${evil}</p>`.value;
      expect(out).to.equal(`<p title="${escapeHtml(evil)}">${escapeHtml(evil)}</p>`);
      expect(out).not.to.contain('<script>');
      expect(escapeHtml(`&<>"'\``)).to.equal('&amp;&lt;&gt;&quot;&#39;&#96;');
    });

    it('keeps nested templates and raw() as they are, joins arrays and drops null, undefined and false', () => {
      const items = ['a<b', 'c'].map((s) => html`<li>${s}</li>`);
      expect(html`<ul>${items}</ul>${null}${undefined}${false}${0}`.value).to.equal('<ul><li>a&lt;b</li><li>c</li></ul>0');
      expect(html`${raw('<br>')}`.value).to.equal('<br>');
    });

    it('renders form fields with a label, a hint and an error slot tied by aria-describedby', () => {
      const out = field({ form: 'f', name: 'email', label: 'Email "address"', type: 'email', hint: 'We never share it' }).value;
      expect(out).to.contain('<label for="f-email">Email &quot;address&quot;</label>');
      expect(out).to.contain('aria-describedby="f-email-hint f-email-error"');
      expect(out).to.contain('<p class="field-error" id="f-email-error" aria-live="polite"></p>');
    });
  });

  describe('assets', () => {
    it('are found from src/ (tsx) and from dist/src/ after a build', () => {
      const source = path.join(ROOT, 'src', 'http', 'pages', 'assets');
      expect(findAssetsDir(path.join(ROOT, 'src', 'http', 'pages'))).to.equal(source);
      expect(findAssetsDir(path.join(ROOT, 'dist', 'src', 'http', 'pages'))).to.equal(source);
    });

    it('are linked with a content version', () => {
      const assets = new Assets();
      expect(assets.url('app.js')).to.match(/^\/assets\/app\.js\?v=[\w-]{10}$/);
      expect(() => assets.url('nope.js')).to.throw();
    });
  });

  it('names devices from their user agent', () => {
    expect(describeDevice(UA.firefoxWindows)).to.equal('Firefox on Windows');
    expect(describeDevice(UA.safariIphone)).to.equal('Safari on iOS');
    expect(describeDevice('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0.0.0 Safari/537.36')).to.equal('Headless Chrome on Linux');
    expect(describeDevice('Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36')).to.equal('Chrome on Android');
    expect(describeDevice('curl/8.5.0')).to.equal('curl');
    expect(describeDevice('')).to.equal('Unknown device');
    expect(initials('Ada Lovelace')).to.equal('AL');
    expect(initials('  ')).to.equal('?');
  });
});
