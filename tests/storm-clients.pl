#!/usr/bin/perl
# storm-clients.pl DIR LIMIT N COMMAND [ARGS...] - a boot storm: N copies of
# COMMAND released at the same instant, for tests/storm.sh and bench/storm.
#
# All N are forked first and held on a pipe; closing it releases them together
# (the clock starts there), so "at once" does not depend on how fast this
# script forks.  Client I (1..N) writes DIR/I.out and DIR/I.err.  When the
# last one has exited, DIR/times has one line per client, "I END_MS RC": the
# CLOCK_MONOTONIC milliseconds from the release to its exit and its exit
# status (128+N for signal N).  Clients still running LIMIT seconds after the
# release are sent SIGTERM, then SIGKILL a second later, and get RC 124.
# The script makes its own process group (the clients are in it), so a
# caller can kill the whole storm with kill -- -PID.
# Exit: 0 when every client exited by itself, 124 when the limit hit, 2 on
# a usage or system error.
use strict;
use warnings;
use POSIX qw(setpgid _exit);
use Time::HiRes qw(clock_gettime CLOCK_MONOTONIC);

my ($dir, $limit, $n, @cmd) = @ARGV;
die "usage: storm-clients.pl DIR LIMIT N COMMAND [ARGS...]\n"
	unless defined $n && @cmd && -d $dir && $limit =~ /^\d+$/ && $limit > 0 && $n =~ /^\d+$/ && $n > 0;
setpgid(0, 0);

pipe(my $gate_r, my $gate_w) or die "storm-clients.pl: pipe: $!\n";
my %client;    # pid -> index
for my $i (1 .. $n) {
	my $pid = fork();
	die "storm-clients.pl: fork: $!\n" unless defined $pid;
	if ($pid == 0) {
		close $gate_w;
		my $b;
		sysread($gate_r, $b, 1);    # EOF when the gate opens
		open(STDIN, '<', '/dev/null') && open(STDOUT, '>', "$dir/$i.out") &&
			open(STDERR, '>', "$dir/$i.err") or _exit(126);
		{ no warnings 'exec'; exec { $cmd[0] } @cmd; }
		_exit(127);
	}
	$client{$pid} = $i;
}
close $gate_r;
my $t0 = clock_gettime(CLOCK_MONOTONIC);
close $gate_w;

my (%end, %rc);
my $killed = 0;
local $SIG{ALRM} = sub {
	kill $killed ? 'KILL' : 'TERM', keys %client;
	$killed = 1;
	alarm 1;
};
alarm $limit;
while (%client) {
	my $pid = wait();
	last if $pid < 0;
	my $i = delete $client{$pid};
	next unless defined $i;
	$end{$i} = (clock_gettime(CLOCK_MONOTONIC) - $t0) * 1000;
	$rc{$i} = $? & 127 ? 128 + ($? & 127) : $? >> 8;
	$rc{$i} = 124 if $killed && $? & 127;
}
alarm 0;

open(my $t, '>', "$dir/times") or die "storm-clients.pl: $dir/times: $!\n";
printf $t "%d %.1f %d\n", $_, $end{$_}, $rc{$_} for sort { $a <=> $b } keys %end;
close $t or die "storm-clients.pl: $dir/times: $!\n";
exit($killed ? 124 : 0);
