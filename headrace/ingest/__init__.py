"""The worker API: the one service worker pods talk to, so that they hold no database credential."""
