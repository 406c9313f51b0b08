function where() {
  return new Error('here').stack;
}
console.log(where());
