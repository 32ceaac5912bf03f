#!/usr/bin/env python
"""Train a StyleGAN2 network on limited data (APA, ADA, DiffAugment, InsGen, vision-aided).

The training loop is not part of this version yet: this entry point only documents itself
and exits with an error, so that no script mistakes it for a working trainer.
"""

import click


@click.command(context_settings=dict(ignore_unknown_options=True, allow_extra_args=True))
@click.pass_context
def main(ctx):
    """Train a StyleGAN2 network (not available in this version)."""
    raise click.ClickException('train.py: the training loop is not implemented in this version of '
                               'the framework yet; nothing was run.')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
