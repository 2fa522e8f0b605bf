"""The emulator's demo Page: what ``botpress-py messenger emulator`` knows unless told otherwise, what
``--configure`` and ``start --emulator`` write into a bot's config, and the user ``chat`` plays."""

DEMO_PAGE_ID = "100000000000001"
DEMO_PAGE_NAME = "Emulator Page"
DEMO_TOKEN = "EMULATOR-TOKEN"
DEMO_APP_SECRET = "emulator-app-secret"
DEMO_PORT = 3100
DEMO_USER = "2000000000000001"
