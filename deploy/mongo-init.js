// Runs once, when MongoDB initialises an empty data volume (docker-entrypoint-initdb.d), as root:
// the application user that workers and the CLI connect as, with readWrite on the larnn database
// only. Its name and password come from .env through the mongo service's environment.
const user = process.env.LARNN_DB_USER;
const password = process.env.LARNN_DB_PASSWORD;
if (!user || !password) {
  throw new Error("LARNN_DB_USER and LARNN_DB_PASSWORD must be set (see .env.example)");
}
db.getSiblingDB("larnn").createUser({user: user, pwd: password, roles: [{role: "readWrite", db: "larnn"}]});
