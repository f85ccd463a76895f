"""`animator ui`: a local web page over the same library calls as the CLI (Gradio, the optional [ui] extra).

`session` holds the work (no Gradio), `page` the layout, `server` the serving; Gradio is imported only by
`server.serve`.
"""
