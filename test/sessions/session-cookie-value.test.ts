import { expect } from 'chai';
import { newSessionId } from '../../src/sessions/session.js';
import { SessionCookieValue } from '../../src/sessions/session-cookie-value.js';

const OLD = 'the old secret, thirty-two characters long';
const NEW = 'the new secret, thirty-two characters long';

describe('the session cookie value', () => {
  const id = newSessionId();

  it('names the backend and, for the database and Redis, signs the id with the first secret', () => {
    const values = new SessionCookieValue([NEW, OLD], 0);
    const d = values.format('database', id);
    expect(d).to.match(/^d\.[\w-]{43}\.[\w-]{22}$/);
    expect(values.parse(d)).to.deep.equal({ backend: 'database', token: id, unsigned: false });
    // The signature covers the id, which a move between the two keeps.
    expect(values.format('redis', id).slice(2)).to.equal(d.slice(2));
    expect(new SessionCookieValue([NEW], 0).parse(d), 'signed with the first').to.deep.include({ token: id });
    expect(new SessionCookieValue([OLD], 0).parse(d), 'not with the others').to.equal(undefined);
    expect(values.format('cookie', 'sealed')).to.equal('c.sealed');
    expect(values.parse('c.sealed')).to.deep.equal({ backend: 'cookie', token: 'sealed', unsigned: false });
  });

  it('verifies with every secret, and not once a secret is taken out', () => {
    const signedWithOld = new SessionCookieValue([OLD], 0).format('redis', id);
    expect(new SessionCookieValue([NEW, OLD], 0).parse(signedWithOld)).to.deep.include({ backend: 'redis', token: id });
    expect(new SessionCookieValue([NEW], 0).parse(signedWithOld)).to.equal(undefined);
  });

  it('refuses an altered id or signature, and a signature not spelled canonically', () => {
    const values = new SessionCookieValue([NEW], 0);
    const good = values.format('database', id);
    const mac = good.slice(good.lastIndexOf('.') + 1);
    const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
    for (const bad of [flip(good, 5), flip(good, good.length - 3), `${good}A`, good.slice(0, -1), `d.${id}.`, `d.${id}`, `d..${mac}`, `x.${id}.${mac}`]) {
      expect(values.parse(bad), bad).to.equal(undefined);
    }
    // 22 characters carry 132 bits for 128: a last character with its low bits set decodes to the same bytes.
    expect('AQgw').to.include(mac[21]);
    expect(values.parse(good.slice(0, -1) + String.fromCharCode(mac.charCodeAt(21) + 1))).to.equal(undefined);
  });

  it('issues unsigned ids itself during the rolling upgrade, for the older instances still serving', () => {
    const now = Date.now();
    const upgrading = new SessionCookieValue([NEW], now + 60_000);
    expect(upgrading.format('redis', id, now)).to.equal(`r.${id}`);
    expect(upgrading.parse(`r.${id}`)).to.deep.equal({ backend: 'redis', token: id, unsigned: true });
    expect(upgrading.format('redis', id, now + 60_000)).to.match(/^r\.[\w-]{43}\.[\w-]{22}$/);
  });

  it('passes an unsigned id from an older release on, marked, only while such ids may still open', () => {
    expect(new SessionCookieValue([NEW], 0).parse(`d.${id}`)).to.equal(undefined);
    expect(new SessionCookieValue([NEW], Date.now()).parse(`d.${id}`)).to.deep.equal({ backend: 'database', token: id, unsigned: true });
  });
});
