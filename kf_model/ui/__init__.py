"""The app's Gradio interface in parts: one module a panel, each a small builder.

A builder creates its components inside the current ``gr.Blocks`` context, wires its own events and returns the
few components the other panels need (a small dataclass). :mod:`kf_model.ui.app` lays the panels out and launches
(``python app.py``). This is the only package of kf that imports gradio; every decision the app makes is in
:mod:`kf_model.serving`.

- ``context``: :class:`AppContext`, what every panel shares (registry, gate, examples, scratch folders)
- ``widgets``: messages, kf errors as gr.Error, the checked image input, the API's task list
- ``style``: CSS, page scripts, the theme
- ``bank_picker``, ``image_input``, ``answer``, ``predicting``, ``tasks``, ``explain``, ``api``, ``export``,
  ``hub``: the panels
"""
