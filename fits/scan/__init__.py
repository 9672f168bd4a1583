"""The scan fit: every frame of a scan fitted with the forward model, then its neighbours' help.

Rooms, in the order of the flow (docs/architecture.md):

* `settings` - every tuning number, grouped, with unit and reason; the ``[fit]`` table.
* `reduced` - the one reader of the reduced scan (``/entry/reduction``).
* `setup` - the model on the fit points and the template bank (`FitSetup`), built once.
* `templates`, `search` - the global orientation search; `linear` - the linear stage.
* `starts` - try a set of starts, keep the best (one routine for every stage).
* `frames` - one batch: search -> linear -> refine; `mixed` - the mixed-pattern rule.
* `neighbours` - the neighbour passes; `driver` - `fit_scan`, checkpoints, resume.
* `results` - the schema of ``/entry/fits`` and every read and write of it.
* `angles` - the reported zone axis, tilts and in-plane angle.
* `boundary` - boundary lines; `truth` - fits against a twin's truth.
"""
