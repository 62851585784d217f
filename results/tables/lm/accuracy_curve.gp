# clrun report: average accuracy on seen tasks after each task, mean ± std per group.
# Render: gnuplot results/tables/lm/accuracy_curve.gp  (or gnuplot -e "out='other.svg'" results/tables/lm/accuracy_curve.gp)
if (!exists("out")) out = 'results/tables/lm/accuracy_curve.svg'
data = 'results/tables/lm/accuracy_curve.dat'
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
  data index 0 using 1:2 with linespoints lc 1 lw 2 pt 7 title 'standin_ft', \
  data index 1 using 1:($2-$3):($2+$3) with filledcurves lc 2 notitle, \
  data index 1 using 1:2 with linespoints lc 2 lw 2 pt 7 title 'standin_ft_migu', \
  data index 2 using 1:($2-$3):($2+$3) with filledcurves lc 3 notitle, \
  data index 2 using 1:2 with linespoints lc 3 lw 2 pt 7 title 'standin_lora', \
  data index 3 using 1:($2-$3):($2+$3) with filledcurves lc 4 notitle, \
  data index 3 using 1:2 with linespoints lc 4 lw 2 pt 7 title 'standin_olora', \
  data index 4 using 1:($2-$3):($2+$3) with filledcurves lc 5 notitle, \
  data index 4 using 1:2 with linespoints lc 5 lw 2 pt 7 title 'standin_olora_migu'
