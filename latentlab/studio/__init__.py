"""latentlab studio: the edits of `manipulate` and `interpolate` with sliders in a local browser page.

`session` holds the model, the directions and the caches of encoded faces (keyed by face id, never
by client state); `renders` turns a request into a picture, a file or the command that reproduces it;
`app` serves them over HTTP (FastAPI, the `studio` extra) next to the static page.
"""
