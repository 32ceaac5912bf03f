#!/usr/bin/env python
"""Generate images, grids and interpolation videos from a network file.

Image generation is not part of this version yet: this entry point only documents itself
and exits with an error, so that no script mistakes it for a working generator.
"""

import click


@click.command(context_settings=dict(ignore_unknown_options=True, allow_extra_args=True))
@click.pass_context
def main(ctx):
    """Generate images from a network file (not available in this version)."""
    raise click.ClickException('generate.py: image generation is not implemented in this version of '
                               'the framework yet; nothing was run.')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
