# clrun report: average accuracy on seen tasks after each task, mean ± std per group.
# Render: gnuplot results/tables/split/accuracy_curve.gp  (or gnuplot -e "out='other.svg'" results/tables/split/accuracy_curve.gp)
if (!exists("out")) out = 'results/tables/split/accuracy_curve.svg'
data = 'results/tables/split/accuracy_curve.dat'
set terminal svg size 900,560 dynamic noenhanced font 'sans,12' background rgb 'white'
set output out
set xlabel 'task'
set ylabel 'average accuracy on seen tasks (%)'
set yrange [0:100]
set xtics 1
set grid
set key outside below
set style fill transparent solid 0.2 noborder
plot \
  data index 0 using 1:($2-$3):($2+$3) with filledcurves lc 1 notitle, \
  data index 0 using 1:2 with linespoints lc 1 lw 2 pt 7 title 'agem_split_fmnist', \
  data index 1 using 1:($2-$3):($2+$3) with filledcurves lc 2 notitle, \
  data index 1 using 1:2 with linespoints lc 2 lw 2 pt 7 title 'cumulative_split_fmnist', \
  data index 2 using 1:($2-$3):($2+$3) with filledcurves lc 3 notitle, \
  data index 2 using 1:2 with linespoints lc 3 lw 2 pt 7 title 'der_split_fmnist', \
  data index 3 using 1:($2-$3):($2+$3) with filledcurves lc 4 notitle, \
  data index 3 using 1:2 with linespoints lc 4 lw 2 pt 7 title 'derpp_split_fmnist', \
  data index 4 using 1:($2-$3):($2+$3) with filledcurves lc 5 notitle, \
  data index 4 using 1:2 with linespoints lc 5 lw 2 pt 7 title 'ewc_split_fmnist', \
  data index 5 using 1:($2-$3):($2+$3) with filledcurves lc 6 notitle, \
  data index 5 using 1:2 with linespoints lc 6 lw 2 pt 7 title 'finetune_cnn_split_fmnist', \
  data index 6 using 1:($2-$3):($2+$3) with filledcurves lc 7 notitle, \
  data index 6 using 1:2 with linespoints lc 7 lw 2 pt 7 title 'finetune_resnet_split_fmnist', \
  data index 7 using 1:($2-$3):($2+$3) with filledcurves lc 8 notitle, \
  data index 7 using 1:2 with linespoints lc 8 lw 2 pt 7 title 'finetune_split_fmnist', \
  data index 8 using 1:($2-$3):($2+$3) with filledcurves lc 9 notitle, \
  data index 8 using 1:2 with linespoints lc 9 lw 2 pt 7 title 'finetune_vit_split_fmnist', \
  data index 9 using 1:($2-$3):($2+$3) with filledcurves lc 10 notitle, \
  data index 9 using 1:2 with linespoints lc 10 lw 2 pt 7 title 'joint_split_fmnist', \
  data index 10 using 1:($2-$3):($2+$3) with filledcurves lc 11 notitle, \
  data index 10 using 1:2 with linespoints lc 11 lw 2 pt 7 title 'lwf_split_fmnist', \
  data index 11 using 1:($2-$3):($2+$3) with filledcurves lc 12 notitle, \
  data index 11 using 1:2 with linespoints lc 12 lw 2 pt 7 title 'migu_cnn_split_fmnist', \
  data index 12 using 1:($2-$3):($2+$3) with filledcurves lc 13 notitle, \
  data index 12 using 1:2 with linespoints lc 13 lw 2 pt 7 title 'migu_replay_split_fmnist', \
  data index 13 using 1:($2-$3):($2+$3) with filledcurves lc 14 notitle, \
  data index 13 using 1:2 with linespoints lc 14 lw 2 pt 7 title 'migu_split_fmnist', \
  data index 14 using 1:($2-$3):($2+$3) with filledcurves lc 15 notitle, \
  data index 14 using 1:2 with linespoints lc 15 lw 2 pt 7 title 'online_ewc_split_fmnist', \
  data index 15 using 1:($2-$3):($2+$3) with filledcurves lc 16 notitle, \
  data index 15 using 1:2 with linespoints lc 16 lw 2 pt 7 title 'replay_split_fmnist (strategy.memory_size=200)', \
  data index 16 using 1:($2-$3):($2+$3) with filledcurves lc 17 notitle, \
  data index 16 using 1:2 with linespoints lc 17 lw 2 pt 7 title 'replay_split_fmnist (strategy.memory_size=500)', \
  data index 17 using 1:($2-$3):($2+$3) with filledcurves lc 18 notitle, \
  data index 17 using 1:2 with linespoints lc 18 lw 2 pt 7 title 'si_split_fmnist'
