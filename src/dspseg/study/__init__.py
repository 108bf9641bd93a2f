"""Studies: the paper's ACR protocol as one command, and what it says about annotation budgets.

    dspseg sweep --data DATA --methods basic,fixmatch,dsp --acrs 1,8,32 --splits 3 --out DIR
    dspseg report DIR          # plots and tables
    dspseg budget DIR --hours 2

A sweep folder explains itself::

    DIR/study.yaml                     the resolved study: data, methods, scenarios, ACRs, splits,
                                       training options, annotation costs, dspseg version
    DIR/data/<scenario>-acr<R>-split<k>/   simulated datasets (hard links to DATA's files)
    DIR/runs/<scenario>/acr<R>/split<k>/<method>/   one `dspseg train` run folder each, plus
                                       eval/test.json and result.json (written last: the run is done)
    DIR/runs/shared/acr<R>/split<k>/basic/  `basic` learns from masks only, which are the same in
                                       every scenario at one ACR and split: trained once, shared
    DIR/runs/shared/acr<R>/split<k>/basic-matched/  `basic` continued for the steps the fine-tuned
                                       methods train on top of it (step_budget matched, the default):
                                       the step-matched reference
    DIR/results.csv                    one row per (method, scenario, ACR, split); see RESULT_COLUMNS
    DIR/report/                        written by `dspseg report`

A method in ``--methods`` may carry its own options, ``NAME:KEY=VALUE:KEY=VALUE`` (e.g.
``dsp:variant=reference:tau=0.5``), so one sweep can compare variants; that full text is the
``method`` column.

``results.csv`` columns (:data:`RESULT_COLUMNS`, then ``dice_<class>`` per class in dataset order):

    method, scenario, acr, split       which run
    status                             done | failed
    mean_dice                          test mean Dice over classes (background included)
    steps, seconds                     training steps and wall seconds of training + test evaluation
    total_steps                        steps from random weights: steps plus those of the run it started
                                       from (a fine-tuned method: basic's steps + its own)
    images_mask .. images_none         training images of each annotation type the method learns from
    boxes, points, labels              objects on them
    cost_hours                         annotation time of those annotations (dspseg.study.costs)
    run                                run folder, relative to DIR
    data                               simulated dataset folder, relative to DIR
    error                              why a failed run failed (empty when done)
"""

from dspseg.vocabulary import COST_UNIT, KINDS

#: images of each kind, then the objects on them (the counts of :func:`dspseg.study.costs.annotation_counts`)
COUNT_COLUMNS = (*(f"images_{kind}" for kind in KINDS), *(unit for unit in COST_UNIT.values() if unit is not None))
RESULT_COLUMNS = ("method", "scenario", "acr", "split", "status", "mean_dice", "steps", "total_steps", "seconds",
                  *COUNT_COLUMNS, "cost_hours", "run", "data", "error")
