// Node.js bootstrap of sbx-supervisor, run as `node -e` before the request arrives.
//
// It warms what the first run would otherwise pay for (~10 ms: the CJS loader's file path,
// util.inspect, the lazily created stdout/stderr streams; stdin stays lazy on purpose),
// reports readiness on fd 3, blocks until the go message arrives ("path\0arg\0arg..." ended
// by EOF), then runs the file as `node path args...` does: Module.runMain() loads it as the
// main module (require.main === module). runMain is started from setImmediate so that no
// frame of this script sits below the user's in stack traces, and ticks and promises queued
// by the main module run in the same order as after a direct run (bound, so that the frame
// reads `Function.executeUserEntryPoint [as runMain]` as it does directly). The globals that `-e`
// defines (require, module, exports, __filename, __dirname, and every builtin module as a lazy
// global) are removed first.
{
  const fs = require('fs');
  const Module = require('module');

  const warm = '/tmp/.sbx-warm.js';
  fs.writeFileSync(warm, 'module.exports = 1;\n');
  Module._load(warm, null, false);
  delete Module._cache[warm];
  fs.unlinkSync(warm);
  require('util').inspect([1, 'a', { b: 2 }]);
  process.stdout.write('');
  process.stderr.write('');

  fs.writeSync(3, 'r');
  const chunks = [];
  const buf = Buffer.alloc(65536);
  for (;;) {
    const n = fs.readSync(3, buf, 0, buf.length, null);
    if (n === 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  fs.closeSync(3);

  process.argv = [process.argv[0]].concat(Buffer.concat(chunks).toString('utf8').split('\0'));
  // After this script, `-e` puts `module` back on globalThis: clean up in the first immediate.
  setImmediate(() => {
    for (const name of ['require', 'module', 'exports', '__filename', '__dirname'])
      delete globalThis[name];
    // `-e` also makes every builtin module a lazy global (fs, http, util...); node's own
    // setter for those is named setReal, which tells them from real globals like process.
    for (const name of Module.builtinModules) {
      const d = Object.getOwnPropertyDescriptor(globalThis, name);
      if (d && d.set && d.set.name === 'setReal')
        delete globalThis[name];
    }
  });
  setImmediate(Module.runMain.bind(Module));
}
