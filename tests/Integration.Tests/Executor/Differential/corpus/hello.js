console.log('héllo wörld ✓', { a: [1, 2, { b: 'c' }] });
console.error('to stderr');
process.stdout.write('no newline at the end');
