"""dnnlib: configuration and file helpers used across the framework."""

from .util import (EasyDict, call_func_by_name, construct_class_by_name, get_obj_by_name,
                   make_cache_dir_path, set_cache_dir)
