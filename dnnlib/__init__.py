"""dnnlib: configuration and file helpers used across the framework."""

from .util import (ChecksumError, atomic_write, DiskFullError, DownloadError, EasyDict, OpenURLError, call_func_by_name,
                   construct_class_by_name, format_time, get_obj_by_name, is_url,
                   make_cache_dir_path, open_url, set_cache_dir)
