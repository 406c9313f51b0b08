function inner() {
  throw new TypeError('bad thing');
}
function outer() {
  inner();
}
outer();
