"""PoseBH (docs/METHOD.md §2): keypoint embedding module, momentum-updated keypoint prototypes, prototype losses and
cross-type self-supervision. Submodules: `embedding`, `prototypes`, `losses`, `css`."""
