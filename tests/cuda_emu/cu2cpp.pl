#!/usr/bin/perl
# cu2cpp.pl: a CUDA source as host C++ for the emulated build. The only rewrite is the launch
# syntax: `kernel<<<grid, block, shared, stream>>>(` becomes `EMU_LAUNCH(kernel, grid, block,
# shared, stream)(`, which tests/cuda_emu/include/emu_device.h turns into a checked launch. The
# text between <<< and >>> is kept as it is (newlines included), so file:line stay the same.
use strict;
use warnings;
local $/;
my $src = <STDIN>;
my $n = ($src =~ s/\b([A-Za-z_][\w:]*(?:\s*<[^<>;()]*>)?)\s*<<<(.*?)>>>\s*\(/EMU_LAUNCH($1, $2)(/gs);
my $left = () = $src =~ /<<<|>>>/g;
die "cu2cpp.pl: $left launch brackets left unconverted\n" if $left;
print $src;
