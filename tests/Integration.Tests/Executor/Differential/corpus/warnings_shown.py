import warnings
warnings.warn('this API is deprecated', DeprecationWarning, stacklevel=1)
warnings.warn('something odd')
