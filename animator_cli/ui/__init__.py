"""`animator ui`: a local web page over the same library calls as the CLI (Gradio, the optional [ui] extra).

`session` holds the work (no Gradio), `page` the layout, `server` the serving, `access` who may sign in,
`workfolder` where uploads and results live and when they go; Gradio is imported only by `server.serve`.
"""

MAX_UPLOAD_MB = 500  # per file: a phone photo, or a few minutes of 1080p video at ~20 Mbit/s
KEEP_MINUTES = 60  # uploads and results unused this long are removed
