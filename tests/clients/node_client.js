// Node's `ssh2` (npm, pinned by tests/run) through the jump host, driven
// by tests/clients/libraries.rs: key, then the methods left (ssh2's
// authHandler sees the partial success), then the code answered through
// keyboard-interactive; a direct-tcpip tunnel (forwardOut) to the granted
// echo server with --data written and read back into --out; a tunnel to
// the port not granted; a second connection with --wrong-code. Prints
// `key: value` lines for the test (the host key it saw among them).
// Loopback only, bounded in time; it decides nothing: the test asserts.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const { parseArgs } = require('util');
const { Client } = require('ssh2');

const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    user: { type: 'string' },
    key: { type: 'string' },
    code: { type: 'string' },
    'wrong-code': { type: 'string' },
    echo: { type: 'string' },
    refused: { type: 'string' },
    data: { type: 'string' },
    out: { type: 'string' },
  },
});

function say(key, value) {
  process.stdout.write(`${key}: ${value}\n`);
}

function hostPort(s) {
  const at = s.lastIndexOf(':');
  return [s.slice(0, at), Number(s.slice(at + 1))];
}

// Key, then keyboard-interactive with `code`: resolves with the client
// logged in, rejects with ssh2's error.
function login(code) {
  return new Promise((resolve, reject) => {
    const client = new Client();
    const key = fs.readFileSync(args.key);
    let asked = 0;
    client
      .on('ready', () => resolve(client))
      .on('error', reject)
      .connect({
        host: args.host,
        port: Number(args.port),
        username: args.user,
        readyTimeout: 30000,
        // Shown for the test to compare with the jump host's own.
        hostVerifier(key) {
          const digest = crypto.createHash('sha256').update(key).digest('base64');
          say('host key', `SHA256:${digest.replace(/=+$/, '')}`);
          return true;
        },
        authHandler(methodsLeft, partialSuccess, next) {
          asked += 1;
          if (asked === 1) return next({ type: 'publickey', username: args.user, key });
          if (asked === 2 && partialSuccess) {
            say('after key', methodsLeft.join(','));
            return next({
              type: 'keyboard-interactive',
              username: args.user,
              prompt(_name, _instructions, _lang, prompts, finish) {
                for (const p of prompts) say('prompt', p.prompt.trim());
                finish(prompts.map(() => code));
              },
            });
          }
          return next(false);
        },
      });
  });
}

function forward(client, to) {
  const [host, port] = hostPort(to);
  return new Promise((resolve, reject) => {
    client.forwardOut('127.0.0.1', 0, host, port, (err, stream) =>
      err ? reject(err) : resolve(stream),
    );
  });
}

// Writes `data` through a tunnel to `to` while reading it back.
async function echo(client, to, data) {
  const stream = await forward(client, to);
  return new Promise((resolve, reject) => {
    const back = [];
    stream.on('data', (chunk) => back.push(chunk));
    stream.on('error', reject);
    stream.on('close', () => resolve(Buffer.concat(back)));
    // end(): the EOF after the last byte; the echo server then closes.
    stream.end(data);
  });
}

async function main() {
  const data = fs.readFileSync(args.data);
  const client = await login(args.code);
  say('after code', 'authenticated');
  fs.writeFileSync(args.out, await echo(client, args.echo, data));
  try {
    (await forward(client, args.refused)).end();
    say('refused', '<nil>');
  } catch (err) {
    say('refused', err.message);
  }
  client.end();
  try {
    (await login(args['wrong-code'])).end();
    say('wrong code', 'authenticated');
  } catch (err) {
    say('wrong code', `${err.level || ''} ${err.message}`.trim());
  }
}

main().catch((err) => {
  process.stderr.write(`${err.stack}\n`);
  process.exit(1);
});
