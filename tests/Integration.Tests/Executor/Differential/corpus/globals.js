console.log(typeof require, typeof module, typeof exports, __filename, __dirname);
console.log(require.main === module, module.id, process.argv.slice(1));
console.log(typeof globalThis.require, typeof globalThis.module, typeof globalThis.exports,
  typeof globalThis.__filename, typeof globalThis.__dirname);
console.log(process.cwd(), process.env.HOME);
console.log(typeof fs, typeof http, typeof util, typeof path, typeof process, typeof console, typeof crypto, typeof Buffer);
console.log(Object.getOwnPropertyNames(globalThis).length);
