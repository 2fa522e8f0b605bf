// What `bottender start` does (dist/cli/providers/sh/start.js of Bottender 1.5.5: express,
// body-parser keeping the raw body for the signature check, every route to Bottender's
// request handler, production mode), listening on 127.0.0.1 only instead of every interface.
//
//   cd <folder with index.js and bottender.config.js>
//   NODE_PATH=bench/.peers/bottender/node_modules NODE_ENV=production node bench/peers/bottender/server.js PORT
const bodyParser = require('body-parser');
const express = require('express');
const { bottender } = require('bottender');

const port = Number(process.argv[2] || process.env.PORT || 5000);

async function main() {
  const app = bottender({ dev: false });
  const handle = app.getRequestHandler();
  await app.prepare();
  const server = express();
  const verify = (req, _, buf) => {
    req.rawBody = buf.toString();
  };
  server.use(bodyParser.json({ verify }));
  server.use(bodyParser.urlencoded({ extended: false, verify }));
  server.all('*', (req, res) => handle(req, res));
  server.listen(port, '127.0.0.1', () => {
    console.log(`bottender ready on http://127.0.0.1:${port}`);
  });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
