"""Jinja templates of the model cards hf_relkd writes (installed as the package ``hf_relkd.model_cards``).

``student_card.md`` is rendered by :func:`hf_relkd.hub.render_model_card`; locate it with
:func:`hf_relkd.hub.card_template_path`.
"""
