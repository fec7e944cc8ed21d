// agentvm: makes Node.js `fetch` honour HTTPS_PROXY / HTTP_PROXY / NO_PROXY.
//
// A VM whose network policy is "allow" reaches the outside only through the egress proxy on its
// loopback, announced in the proxy variables. Node.js 22.21+ and 24+ honour them natively when
// NODE_USE_ENV_PROXY=1 (which agentvm sets); older versions ignore them for `fetch`. For those,
// this preload (loaded through NODE_OPTIONS=--require=...) replaces fetch's global dispatcher
// with one whose connections go through the proxy as CONNECT tunnels (TLS on top for https).
// Node's own `http`/`https` modules are not changed on those versions: use fetch, or an agent
// such as `https-proxy-agent`, or Node 22.21+ (see the README).
'use strict';
(function agentvmNodeProxy() {
  const [major, minor] = process.versions.node.split('.').map(Number);
  const native = major >= 24 || (major === 22 && minor >= 21);
  if (native && process.env.NODE_USE_ENV_PROXY === '1') return;
  const env = (name) => process.env[name] || process.env[name.toLowerCase()] || '';
  const proxyText = env('HTTPS_PROXY') || env('HTTP_PROXY');
  if (!proxyText || typeof globalThis.fetch !== 'function') return;
  let proxy;
  try {
    proxy = new URL(proxyText);
  } catch {
    return;
  }
  const net = require('net');
  const tls = require('tls');
  const noProxy = env('NO_PROXY').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
  const bypass = (host) => {
    const h = host.toLowerCase().replace(/^\[|\]$/g, '');
    return noProxy.some((entry) => {
      if (entry === '*') return true;
      const e = entry.replace(/^\*?\./, '');
      return h === e || h.endsWith('.' + e);
    });
  };

  function connect(opts, callback) {
    let done = false;
    const finish = (err, socket) => {
      if (done) return;
      done = true;
      callback(err, socket);
    };
    const secure = opts.protocol === 'https:';
    const host = String(opts.hostname).replace(/^\[|\]$/g, '');
    const port = Number(opts.port) || (secure ? 443 : 80);
    const servername = opts.servername || (net.isIP(host) ? undefined : host);
    const overTls = (socket) => {
      const t = tls.connect({ socket, servername, ALPNProtocols: ['http/1.1'] });
      t.once('secureConnect', () => finish(null, t));
      t.once('error', finish);
    };
    if (bypass(host)) {
      const s = net.connect({ host, port });
      s.once('error', finish);
      s.once('connect', () => (secure ? overTls(s) : finish(null, s)));
      return;
    }
    const target = (host.includes(':') ? `[${host}]` : host) + ':' + port;
    const s = net.connect({ host: proxy.hostname.replace(/^\[|\]$/g, ''), port: Number(proxy.port) || 80 });
    s.once('error', finish);
    s.once('connect', () => s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`));
    let head = Buffer.alloc(0);
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > 65536) {
          s.destroy();
          finish(new Error(`proxy ${proxy.host}: response head too large`));
        }
        return;
      }
      s.removeListener('data', onData);
      const text = head.toString('latin1', 0, end);
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      if (!status || status[1] !== '200') {
        const reason = head.toString('utf8', end + 4).trim();
        s.destroy();
        finish(new Error(`proxy refused CONNECT ${target}: ${text.split('\r\n')[0]}${reason ? ' — ' + reason : ''}`));
        return;
      }
      const rest = head.subarray(end + 4);
      if (rest.length) s.unshift(rest);
      if (secure) overTls(s);
      else finish(null, s);
    };
    s.on('data', onData);
  }

  const key = Symbol.for('undici.globalDispatcher.1');
  const install = () => {
    const current = globalThis[key];
    if (!current || current.__agentvmProxy) return;
    const Agent = current.constructor;
    const agent = new Agent({ connect });
    agent.__agentvmProxy = true;
    globalThis[key] = agent;
  };
  // The bundled undici (and so its Agent class) loads on the first fetch call: make one that
  // needs no network, then install before any other code runs a fetch of its own.
  const original = globalThis.fetch;
  globalThis.fetch = function fetch(...args) {
    install();
    return original.apply(this, args);
  };
  original('data:,').then(install, install);
})();
