"""The web console (``pip install 'beatsqlalchemy[web]'``): schedules, their next runs and
their run log, with the actions of the api, behind a login.

``beatsqlalchemy.web.app.create_app`` builds it (Starlette, Jinja2); this package itself
imports nothing of those, so that the command line (``web-password``) and beat, which load
the package's commands, never import them.
"""
