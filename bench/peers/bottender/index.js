// Bottender app of the answering benchmark (bench/answer.py): answers every text with the same
// text through context.sendText, i.e. one Send API call per message. The client's Graph origin
// is pointed at the local Graph API (bench/peers/graph_ok.py, port GRAPH_OK_PORT), so nothing
// leaves the machine. Set once per client, on its first message.
const GRAPH_ORIGIN = `http://127.0.0.1:${process.env.GRAPH_OK_PORT || 8898}`;

module.exports = async function App(context) {
  if (!context.client.__benchOrigin) {
    context.client.axios.defaults.baseURL = `${GRAPH_ORIGIN}/v${context.client.version}/`;
    context.client.__benchOrigin = true;
  }
  if (context.event.isText) {
    await context.sendText(context.event.text);
  }
};
