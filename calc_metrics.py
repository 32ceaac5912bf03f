#!/usr/bin/env python
"""Compute quality metrics (FID, KID, precision/recall, IS, PPL) of a network file.

Metric computation is not part of this version yet: this entry point only documents itself
and exits with an error, so that no script mistakes it for working metrics.
"""

import click


@click.command(context_settings=dict(ignore_unknown_options=True, allow_extra_args=True))
@click.pass_context
def main(ctx):
    """Compute metrics of a network file (not available in this version)."""
    raise click.ClickException('calc_metrics.py: metrics are not implemented in this version of '
                               'the framework yet; nothing was run.')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
