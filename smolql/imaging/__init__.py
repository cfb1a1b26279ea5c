"""Reading image headers, decoding whole images and encoding renditions."""
