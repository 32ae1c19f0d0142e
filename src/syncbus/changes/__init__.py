"""Change management for flows (issue 10): version history, diff, shadow runs, promote, rollback, reports.

One module per concern: ``history`` records what a node loads, ``diff``
compares two mapping specs field by field, ``tree`` compares two mapped
outputs, ``shadow`` runs a candidate beside the live route, ``switch``
promotes and rolls back by rewriting files (the hot reload swaps them),
``versioned`` maps with a version from the history, ``effect`` measures what
a change did and ``effect_html``/``svg`` draw it.
"""
