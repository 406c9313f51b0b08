const seen = [];
process.nextTick(() => seen.push('tick'));
Promise.resolve().then(() => seen.push('promise'));
queueMicrotask(() => seen.push('microtask'));
setImmediate(() => { seen.push('immediate'); console.log(seen.join(' ')); });
seen.push('sync');
