async function fail() {
  throw new Error('rejected');
}
fail();
