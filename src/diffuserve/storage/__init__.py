"""Where generated images live until their links expire."""
