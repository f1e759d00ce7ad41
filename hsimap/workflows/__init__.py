"""What hsimap does with scenes, each a function with a typed options object: train, unmix,
evaluate, batch, demo. The CLI calls these; so can a notebook."""
