// Bottender 1.5.5 config of the answering benchmark: the shape `bottender init` writes,
// Messenger only, sessions in memory (Bottender's default driver). Values come from the
// environment bench/peers/__init__.py sets (the app secret is the benchmark's, so the same
// signed deliveries verify here and in botpress-py).
module.exports = {
  session: {
    driver: 'memory',
    stores: {
      memory: { maxSize: 500 },
    },
  },
  initialState: {},
  channels: {
    messenger: {
      enabled: true,
      path: '/webhooks/messenger',
      pageId: process.env.MESSENGER_PAGE_ID,
      accessToken: process.env.MESSENGER_ACCESS_TOKEN,
      appId: process.env.MESSENGER_APP_ID,
      appSecret: process.env.MESSENGER_APP_SECRET,
      verifyToken: process.env.MESSENGER_VERIFY_TOKEN,
      // Bottender's own default: no user profile fetched while building the context.
      skipLegacyProfile: true,
    },
  },
};
