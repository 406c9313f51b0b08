console.log('terminating myself');
process.kill(process.pid, 'SIGTERM');
