// A Node.js web API publishing our tasks by name with celery-node (no Python anywhere).
// Usage: node send_task.js BROKER_URL PROTOCOL TASK_NAME ARGS_JSON KWARGS_JSON
// PROTOCOL: 1 or 2 (Celery's task message protocols, as celery-node builds them).
const celery = require("celery-node");

const [broker, protocol, name, args, kwargs] = process.argv.slice(2);
const client = celery.createClient(broker, broker);
client.conf.TASK_PROTOCOL = Number(protocol);
client.sendTask(name, JSON.parse(args), JSON.parse(kwargs));
// celery-node publishes asynchronously and offers no promise for it: wait for the broker's
// connection to be ready, give the publish a moment, then close.
client.isReady()
  .then(() => new Promise((resolve) => setTimeout(resolve, 300)))
  .then(() => client.disconnect())
  .then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
