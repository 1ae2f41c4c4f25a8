/* fpu-state: sets the SSE rounding mode (MXCSR, part of the XSAVE state) before its first
 * stdin read and reports it after, so a restore that lost the FPU state shows up. */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
    char buf[4096];
    unsigned int mxcsr = 0x7f80; /* all exceptions masked, round toward zero */
    volatile double one = 1.0, three = 3.0;
    __asm__ volatile("ldmxcsr %0" : : "m"(mxcsr));
    while (read(0, buf, sizeof buf) > 0)
        ;
    double third = one / three;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    printf("rounding=%s mxcsr=%#x third=%.17g\n", (mxcsr >> 13 & 3) == 3 ? "towardzero" : "other", mxcsr, third);
    return 0;
}
