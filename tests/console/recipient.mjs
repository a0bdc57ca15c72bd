// A recipient endpoint for the console tests: fk's inbox over HTTPS with
// the server certificate `samgate init` wrote (the gateway pins it). It
// answers every delivery with an empty 204.
import fs from "node:fs";
import https from "node:https";

const [dir, port] = process.argv.slice(2);
https.createServer({
  cert: fs.readFileSync(`${dir}/pki/fk-server.pem`),
  key: fs.readFileSync(`${dir}/pki/fk-server.key`),
}, (req, res) => {
  req.resume();
  req.on("end", () => { res.writeHead(204); res.end(); });
}).listen(Number(port), "127.0.0.1");
