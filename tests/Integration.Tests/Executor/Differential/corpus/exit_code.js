console.log('before');
process.exit(5);
