"""ViTPose++-L/16 multi-dataset training (docs/METHOD.md §1); same arguments as configs/b16.py."""

from configs import b16


def get_config(arg: str = ''):
  """ViTPose++-L/16; pass 'runlocal' for a few synthetic steps."""
  return b16.get_config(','.join(filter(None, ['variant=L/16', arg])))
