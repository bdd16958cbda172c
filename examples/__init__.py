"""Demo networks for convcore: a trained 8x8-digits CNN and the lecture's CIFAR-10 net."""
